"""Settings, declared once as (name, type, default, help).

The same declarations feed `connect()`, the CLI's `--help`, `docs/configuration.md` and a
test that fails when a setting is undocumented. Values merge, lowest first: the defaults, an
`omnilake.toml` (its path from `OMNILAKE_CONFIG`, else `./omnilake.toml`, else the one inside
the warehouse folder), `OMNILAKE_*` environment variables, then keyword arguments.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omnilake.errors import InvalidParameterValue

ENV_PREFIX = "OMNILAKE_"
CONFIG_FILE = "omnilake.toml"


def _setting(default: Any, kind: type, help: str) -> Any:  # noqa: A002 - mirrors argparse
    return field(default=default, metadata={"kind": kind, "help": help})


def _quarter_of_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a modest default
        return 1024 ** 3


@dataclass(frozen=True)
class Settings:
    warehouse: str | None = _setting(
        None, str, "Warehouse location: a local folder (created if missing) or an object-storage "
        "URI `s3://bucket/prefix` (the bucket must exist). Empty means a temporary warehouse "
        "removed when the connection closes.")
    catalog: str | None = _setting(
        None, str, "Iceberg catalog URI (SQLAlchemy form). Default: SQLite file "
        "`catalog.db` inside the warehouse folder, or, for an `s3://` warehouse, inside "
        "`local_dir`. Name a shared database when several machines open one S3 warehouse.")
    local_dir: str | None = _setting(
        None, str, "Local folder of an `s3://` warehouse's SQLite catalog and write-ahead log. "
        "Default: `$XDG_DATA_HOME/omnilake/warehouses/<bucket>-<hash of the URI>` "
        "(`~/.local/share/...`), shared by every process on the machine.")
    s3_endpoint: str | None = _setting(
        None, str, "S3 endpoint URL, e.g. `http://127.0.0.1:9000` for MinIO. Default: "
        "`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, else AWS itself.")
    s3_region: str | None = _setting(
        None, str, "S3 region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.")
    s3_access_key_id: str | None = _setting(
        None, str, "S3 access key. Default: `AWS_ACCESS_KEY_ID` (with `AWS_SESSION_TOKEN`), "
        "else the AWS SDK's usual chain (profile, instance role).")
    s3_secret_access_key: str | None = _setting(
        None, str, "S3 secret key. Default: `AWS_SECRET_ACCESS_KEY`.")
    s3_addressing: str = _setting(
        "path", str, "`path` (http://endpoint/bucket/key: MinIO, moto, most servers) or "
        "`virtual` (http://bucket.endpoint/key) requests.")
    s3_connect_timeout: float = _setting(5.0, float, "Seconds to wait for a connection to S3.")
    s3_request_timeout: float = _setting(
        30.0, float, "Seconds to wait for an S3 response before the request counts as failed "
        "(and is retried).")
    cache_size: int = _setting(
        1024 ** 3, int, "Bytes of the local read cache of an `s3://` warehouse's objects (data "
        "files, manifests, metadata; least recently used go first); 0 turns it off.")
    cache_dir: str | None = _setting(
        None, str, "Folder of the read cache, shared safely by every process that names it. "
        "Default: `$XDG_CACHE_HOME/omnilake/objects` or `~/.cache/omnilake/objects`.")
    s3_max_attempts: int = _setting(
        5, int, "Tries per S3 request (the first included); retries back off exponentially "
        "with jitter on 5xx, throttling, timeouts and dropped connections.")
    load_file_from: str | None = _setting(
        None, str, "What `load_file()` may read: `*` (any local file, s3:// object of the "
        "warehouse's store or http(s):// URL the process can reach), or a comma-separated list "
        "of local folders and URL prefixes. Default: `*` in process, nothing for `omnilake "
        "serve`, whose clients would otherwise read the server's files.")
    schema: str = _setting("public", str, "Schema (Iceberg namespace) that unqualified table names use.")
    dialect: str = _setting("postgres", str, "SQL dialect of incoming statements: `postgres` or `mysql`.")
    target_partitions: int = _setting(
        0, int, "DataFusion parallelism; 0 means one partition per CPU core.")
    batch_size: int = _setting(8192, int, "Rows per Arrow batch inside DataFusion.")
    plan_cache_size: int = _setting(256, int, "Scan plans (table snapshot + filter) kept in memory.")
    column_cache_bytes: int = _setting(
        _quarter_of_memory(), int, "Memory for decoded columns of data files read more than "
        "once (least recently used dropped first); default a quarter of physical memory, "
        "0 turns it off. One scan takes about this much at most; the rest streams from Parquet.")
    durability: str = _setting(
        "fsync", str, "When a write is acknowledged: `fsync` (its log record is on disk), "
        "`batch` (written, fsynced within 10 ms: an OS crash may lose the last 10 ms), `off` "
        "(written, never fsynced: survives a process crash, not an OS crash).")
    flush_rows: int = _setting(500_000, int, "Pending rows of one table that trigger a flush to Iceberg.")
    flush_bytes: int = _setting(64 * 1024 * 1024, int, "Pending bytes of one table that trigger a flush.")
    flush_interval: float = _setting(5.0, float, "Seconds after which pending rows are flushed anyway.")
    target_file_size: int = _setting(128 * 1024 * 1024, int, "Data file size OPTIMIZE (compaction) "
                                     "aims for; smaller files are rewritten.")
    compact_files: int = _setting(16, int, "Background compaction of a table starts once it has "
                                  "this many data files after a flush; 0 turns it off.")
    retention_hours: float = _setting(168.0, float, "VACUUM keeps snapshots and unreferenced files "
                                      "younger than this many hours (time travel reaches this far).")
    timeseries_interval: float = _setting(
        60.0, float, "Seconds between background runs that drop expired partitions of "
        "time-series tables (their `retention`) and refresh continuous aggregates; 0 turns "
        "them off (VACUUM and REFRESH MATERIALIZED VIEW still do it on demand).")
    device: str = _setting("auto", str, "Where vector kernels and embeddings run: `auto` (a GPU "
                           "through CuPy when present), `cpu`, or `gpu` (an error without one).")
    vector_cache_bytes: int = _setting(
        1024 * 1024 * 1024, int, "Memory for loaded vector-index segments and the data-file rows "
        "that vector searches read (half each), least recently used dropped first.")
    vector_exact_rows: int = _setting(
        20_000, int, "A filtered vector search computes exact distances over a data file's "
        "matching rows when at most this many match at 128 dimensions, proportionally fewer "
        "for wider vectors (filter-first); above that it searches the index with the filter, "
        "widening until k rows come back.")
    event_loop: str = _setting("auto", str, "The event loop of `omnilake serve`: `auto` (uvloop "
                               "where it is installed, else asyncio's), `uvloop` or `asyncio`.")
    model_dir: str | None = _setting(None, str, "Folder of downloaded models. Default: "
                                     "`$XDG_CACHE_HOME/omnilake/models` or `~/.cache/omnilake/models`.")

    @classmethod
    def declarations(cls) -> list[tuple[str, type, Any, str]]:
        """(name, type, default, help) for every setting, in declaration order."""
        return [(f.name, f.metadata["kind"], f.default, f.metadata["help"]) for f in fields(cls)]

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        known = {name: kind for name, kind, _, _ in cls.declarations()}
        unknown = set(overrides) - set(known)
        if unknown:
            raise InvalidParameterValue(
                f"unknown setting(s): {', '.join(sorted(unknown))}",
                hint=f"known settings: {', '.join(known)}")
        values: dict[str, Any] = {}
        warehouse = overrides.get("warehouse") or environ.get(ENV_PREFIX + "WAREHOUSE")
        values.update(_read_toml(environ, warehouse))
        for name in known:
            env_value = environ.get(ENV_PREFIX + name.upper())
            if env_value is not None and env_value != "":
                values[name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name, value in list(values.items()):
            if name not in known:
                raise InvalidParameterValue(f"unknown setting {name!r} in {CONFIG_FILE}")
            values[name] = _convert(name, known[name], value)
        settings = cls(**values)
        if settings.durability not in ("fsync", "batch", "off"):
            raise InvalidParameterValue(
                f"durability must be fsync, batch or off, not {settings.durability!r}")
        if settings.device not in ("auto", "cpu", "gpu"):
            raise InvalidParameterValue(f"device must be auto, cpu or gpu, not {settings.device!r}")
        if settings.event_loop not in ("auto", "uvloop", "asyncio"):
            raise InvalidParameterValue(
                f"event_loop must be auto, uvloop or asyncio, not {settings.event_loop!r}")
        if settings.column_cache_bytes < 0:
            raise InvalidParameterValue(
                f"column_cache_bytes must be 0 (off) or more, not {settings.column_cache_bytes}")
        if settings.dialect not in ("postgres", "mysql"):
            raise InvalidParameterValue(
                f"dialect must be 'postgres' or 'mysql', not {settings.dialect!r}")
        return settings

    def s3_options(self):
        """How to reach the object store of an `s3://` warehouse (AWS variables fill gaps)."""
        from omnilake.storage.objectstore import S3Options
        return S3Options.resolve(
            endpoint=self.s3_endpoint, region=self.s3_region,
            access_key_id=self.s3_access_key_id, secret_access_key=self.s3_secret_access_key,
            addressing=self.s3_addressing, connect_timeout=self.s3_connect_timeout,
            request_timeout=self.s3_request_timeout, max_attempts=self.s3_max_attempts,
            cache_dir=self.cache_dir, cache_bytes=self.cache_size)

    def effective_partitions(self) -> int:
        return self.target_partitions or os.cpu_count() or 1


def _read_toml(environ: dict[str, str], warehouse: str | None) -> dict[str, Any]:
    candidates = []
    if environ.get(ENV_PREFIX + "CONFIG"):
        candidates.append(Path(environ[ENV_PREFIX + "CONFIG"]))
    candidates.append(Path.cwd() / CONFIG_FILE)
    if warehouse and "://" not in warehouse:
        candidates.append(Path(warehouse) / CONFIG_FILE)
    for path in candidates:
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise InvalidParameterValue(f"cannot parse {path}: {exc}") from exc
            # Settings may sit at top level or under [omnilake].
            return dict(data.get("omnilake", data))
    return {}


def _convert(name: str, kind: type, value: Any) -> Any:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterValue(
            f"setting {name} expects {kind.__name__}, got {value!r}") from exc
