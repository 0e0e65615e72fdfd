"""Opening a warehouse: an Iceberg catalog plus the place its data files live.

A local warehouse is a folder holding `catalog.db` (pyiceberg's SQL catalog on SQLite) and one
sub-folder per namespace and table for data and metadata files. Tables written here are plain
Iceberg: pyiceberg, DuckDB, Spark or Trino can read them through the same catalog.

An object-storage warehouse (`s3://bucket/prefix`) keeps data and metadata files in the
bucket, read and written through pyiceberg's FileIO (see storage.objectstore). What must stay
on local disk lives in its *state folder*: the SQLite catalog (unless `catalog=` names a
shared SQL catalog) and the write-ahead log. By default that folder is
`$XDG_DATA_HOME/omnilake/warehouses/<bucket>-<hash of the URI>` (`~/.local/share/...`), so
every process on the machine that opens the same URI shares one catalog; `local_dir`
overrides it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import uuid
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from pyiceberg.table import Table

from omnilake.errors import OperationalError
from omnilake.catalog.types import SqlType, column_sql_types
from omnilake.storage import memory_only, objectstore
from omnilake.storage.objectstore import S3Options

log = logging.getLogger(__name__)
CATALOG_NAME = "omnilake"
DEFAULT_SCHEMA = "public"


@dataclass
class Warehouse:
    catalog: Catalog
    location: str            # root URI of data files, e.g. file:///data/wh
    local_root: Path | None  # the folder, for a local warehouse
    temporary: bool = False
    state_root: Path | None = None  # local folder of the catalog and WAL (default local_root)
    s3: S3Options | None = None     # how to reach an object-storage warehouse
    filesystem: object = None       # pyarrow filesystem of an object-storage warehouse
    _closed: bool = field(default=False, repr=False)
    _readers: threading.local = field(default_factory=threading.local, repr=False)
    _opened_readers: list = field(default_factory=list, repr=False)

    @classmethod
    def open(cls, location: str | None, catalog_uri: str | None = None,
             s3: S3Options | None = None, local_dir: str | None = None) -> "Warehouse":
        temporary = location is None
        if temporary:
            location = tempfile.mkdtemp(prefix="omnilake-")
        if objectstore.is_object_store(location):
            return cls._open_object_store(location, catalog_uri, s3 or S3Options.resolve(),
                                          local_dir)
        if "://" in location and not location.startswith("file://"):
            raise OperationalError(
                f"warehouse {location!r}: only local folders and s3:// URIs are supported",
                hint="pass a folder path, e.g. omnilake.connect('./warehouse'), or "
                     "s3://bucket/prefix")
        root = Path(location.removeprefix("file://")).expanduser().resolve()
        _make_folder(root, "warehouse folder")
        catalog = _open_catalog(catalog_uri or f"sqlite:///{root / 'catalog.db'}", root.as_uri(), {})
        log.debug("opened warehouse %s", root)
        return cls(catalog=catalog, location=root.as_uri(), local_root=root, temporary=temporary,
                   state_root=root)

    @classmethod
    def _open_object_store(cls, location: str, catalog_uri: str | None, s3: S3Options,
                           local_dir: str | None) -> "Warehouse":
        scheme, rest = location.split("://", 1)
        bucket, prefix = objectstore.split(location)
        if not bucket:
            raise OperationalError(f"warehouse {location!r} names no bucket",
                                   hint="use s3://bucket/prefix", sqlstate="22023")
        location = f"s3://{bucket}/{prefix}".rstrip("/")
        filesystem = s3.filesystem()
        objectstore.check_bucket(filesystem, location)
        state = Path(local_dir).expanduser().resolve() if local_dir else default_state_dir(location)
        _make_folder(state, "local state folder")
        catalog = _open_catalog(catalog_uri or f"sqlite:///{state / 'catalog.db'}", location,
                                s3.fileio_properties())
        log.debug("opened warehouse %s (state in %s)", location, state)
        return cls(catalog=catalog, location=location, local_root=None, state_root=state,
                   s3=s3, filesystem=filesystem)

    @property
    def wal_root(self) -> Path:
        """The write-ahead log's folder: always on local disk (see docs/architecture.md)."""
        return self.state_root / "_wal"


    def metadata_location(self, namespace: str, name: str) -> str | None:
        """Current metadata file of a table, read straight from the catalog's table (the JDBC
        catalog layout pyiceberg's SqlCatalog uses), or None when that is not available. A
        cheap check that lets callers reuse a table they loaded before."""
        engine = getattr(self.catalog, "engine", None)
        if engine is None:
            return None
        from sqlalchemy import text
        local = engine.url.get_backend_name() == "sqlite" and engine.url.database
        memory_only.check(local, "the catalog database")  # (a local file: ~20 us)
        try:
            if local:
                return self._sqlite_metadata_location(engine.url.database, namespace, name)
            with engine.connect() as connection:
                row = connection.execute(text(
                    "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = :c "
                    "AND table_namespace = :ns AND table_name = :t"),
                    {"c": CATALOG_NAME, "ns": namespace, "t": name}).first()
        except memory_only.WouldWait:
            raise
        except Exception as exc:  # SQLAlchemy: database locked, unreachable, ...
            raise OperationalError(f"cannot read the catalog: {exc}".split("\n")[0],
                                   hint="another process may hold the catalog locked; retry") from exc
        return row[0] if row else None

    def _sqlite_metadata_location(self, database: str, namespace: str, name: str) -> str | None:
        """The same query on a plain sqlite3 connection kept per thread: ~20 us where a
        SQLAlchemy round trip costs ~1 ms, and every statement asks once per table. Outside a
        transaction each SELECT sees the latest commit of any process. Where the caller may
        not wait (storage/memory_only.py), a catalog locked by a writer raises WouldWait at
        once, where others wait up to 30 s for the lock."""
        wait = not memory_only.active()
        kind = "connection" if wait else "connection_no_wait"
        connection = getattr(self._readers, kind, None)
        if connection is None:
            connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                         timeout=30 if wait else 0, isolation_level=None,
                                         check_same_thread=False)
            setattr(self._readers, kind, connection)
            self._opened_readers.append(connection)  # closed by close(), from any thread
        try:
            row = connection.execute(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? "
                "AND table_namespace = ? AND table_name = ?",
                (CATALOG_NAME, namespace, name)).fetchone()
        except sqlite3.OperationalError as exc:
            if not wait and "locked" in str(exc):
                raise memory_only.WouldWait("the catalog, locked by a writer") from exc
            raise
        return row[0] if row else None

    def table_location(self, namespace: str, name: str) -> str:
        """A folder of its own for every table created: a table renamed away keeps its folder,
        and a new table under the old name must not share (or on DROP, delete) it."""
        return f"{self.location}/{namespace}/{name}-{uuid.uuid4().hex[:12]}"

    def remove_location(self, location: str) -> None:
        """Delete a dropped table's files (only inside the warehouse)."""
        if self.filesystem is not None:
            if location.startswith(self.location + "/"):
                objectstore.remove_prefix(self.filesystem, location)
            return
        if self.local_root is None or not location.startswith("file://"):
            return
        path = Path(location.removeprefix("file://")).resolve()
        if self.local_root in path.parents:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        engine = getattr(self.catalog, "engine", None)
        if engine is not None:
            engine.dispose()
        for connection in self._opened_readers:
            connection.close()
        if self.temporary and self.local_root is not None:
            shutil.rmtree(self.local_root, ignore_errors=True)


def default_state_dir(location: str) -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    bucket, _ = objectstore.split(location)
    digest = hashlib.sha256(location.encode()).hexdigest()[:12]
    return base / "omnilake" / "warehouses" / f"{bucket}-{digest}"


def _make_folder(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationalError(f"cannot create {what} {path}: {exc.strerror}") from exc


def _open_catalog(uri: str, warehouse: str, properties: dict[str, str]) -> SqlCatalog:
    try:
        catalog = SqlCatalog(CATALOG_NAME, uri=uri, warehouse=warehouse, **properties)
        try:
            catalog.create_namespace(DEFAULT_SCHEMA)
        except NamespaceAlreadyExistsError:
            pass
    except Exception as exc:  # pyiceberg/SQLAlchemy errors while opening the catalog
        raise OperationalError(f"cannot open the catalog at {uri}: {exc}") from exc
    return catalog


def sql_types_of(table: Table) -> dict[int, SqlType]:
    return column_sql_types(table.schema(), table.properties)
