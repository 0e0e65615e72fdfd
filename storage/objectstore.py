"""Object storage (S3 and S3-compatible servers such as MinIO) under a warehouse.

One `S3Options` holds where and how to reach the store: endpoint, region, credentials,
addressing, timeouts and retries. It is resolved once, when a warehouse opens, from OmniLake's
settings and then the standard AWS environment variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
`AWS_DEFAULT_REGION`), so `omnilake.connect("s3://bucket/prefix")` needs nothing else where AWS
tools already work. The same options feed all three clients that touch the store:

- pyiceberg's FileIO (metadata, manifests, data files written by flushes and compaction), as
  catalog properties naming `ObjectFileIO`, a PyArrowFileIO whose S3 filesystem retries with
  the AWS standard strategy (exponential backoff with jitter; 5xx, throttling, timeouts and
  dropped connections) and has connect and request timeouts, so a dead store fails, not hangs;
- pyarrow's `S3FileSystem` for footers, listing (VACUUM) and deleting (DROP);
- DataFusion's own S3 object store, which scans read through (it retries on its own).

Errors from any of them become `OperationalError`s with a SQLSTATE and a hint in `translate`.
Nothing here knows SQL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow.fs as pafs
from pyiceberg.io import InputFile
from pyiceberg.io.pyarrow import PyArrowFileIO

from omnilake import errors as E

SCHEMES = ("s3://", "s3a://", "s3n://")
DEFAULT_REGION = "us-east-1"
# Catalog/table property keys: pyiceberg's, plus ours for what pyiceberg has no key for.
RETRIES_PROPERTY = "omnilake.s3.max-attempts"
ADDRESSING_PROPERTY = "omnilake.s3.addressing"
CACHE_DIR_PROPERTY = "omnilake.cache.dir"
CACHE_BYTES_PROPERTY = "omnilake.cache.max-bytes"


def is_object_store(location: str | None) -> bool:
    return bool(location) and location.lower().startswith(SCHEMES)


def split(uri: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at the ends) of an s3:// URI."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


@dataclass(frozen=True)
class S3Options:
    endpoint: str | None = None       # e.g. http://127.0.0.1:9000; None means AWS itself
    region: str = DEFAULT_REGION
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing: str = "path"          # "path" (MinIO, moto, most servers) or "virtual"
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    max_attempts: int = 5             # first try included
    cache_dir: str | None = None      # local read cache folder (None: the default one)
    cache_bytes: int = 0              # its size limit; 0 turns the cache off

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **given: Any) -> "S3Options":
        """Given values (OmniLake settings; None where unset) first, then AWS variables."""
        env = os.environ if environ is None else environ

        def pick(value, *names):
            if value not in (None, ""):
                return value
            for name in names:
                if env.get(name):
                    return env[name]
            return None

        addressing = (given.get("addressing") or "path").lower()
        if addressing not in ("path", "virtual"):
            raise E.InvalidParameterValue(
                f"s3_addressing must be 'path' or 'virtual', not {addressing!r}")
        return cls(
            endpoint=pick(given.get("endpoint"), "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=pick(given.get("region"), "AWS_REGION", "AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key_id=pick(given.get("access_key_id"), "AWS_ACCESS_KEY_ID"),
            secret_access_key=pick(given.get("secret_access_key"), "AWS_SECRET_ACCESS_KEY"),
            session_token=pick(given.get("session_token"), "AWS_SESSION_TOKEN"),
            addressing=addressing,
            connect_timeout=float(given.get("connect_timeout") or cls.connect_timeout),
            request_timeout=float(given.get("request_timeout") or cls.request_timeout),
            max_attempts=max(1, int(given.get("max_attempts") or cls.max_attempts)),
            cache_dir=given.get("cache_dir") or None,
            cache_bytes=max(0, int(given.get("cache_bytes") or 0)),
        )

    def read_cache(self):
        """The local read cache (storage.readcache), or None when it is off."""
        if self.cache_bytes <= 0:
            return None
        from omnilake.storage.readcache import ReadCache, default_folder
        return ReadCache(self.cache_dir or default_folder(), self.cache_bytes)

    # -- the three clients -----------------------------------------------------------------
    def fileio_properties(self) -> dict[str, str]:
        """Catalog properties that make every table's FileIO an `ObjectFileIO` on this store."""
        props = {
            "py-io-impl": f"{ObjectFileIO.__module__}.{ObjectFileIO.__name__}",
            "s3.region": self.region,
            "s3.connect-timeout": str(self.connect_timeout),
            "s3.request-timeout": str(self.request_timeout),
            RETRIES_PROPERTY: str(self.max_attempts),
            ADDRESSING_PROPERTY: self.addressing,
            CACHE_BYTES_PROPERTY: str(self.cache_bytes),
        }
        if self.cache_dir:
            props[CACHE_DIR_PROPERTY] = self.cache_dir
        optional = {"s3.endpoint": self.endpoint, "s3.access-key-id": self.access_key_id,
                    "s3.secret-access-key": self.secret_access_key,
                    "s3.session-token": self.session_token}
        props.update({k: v for k, v in optional.items() if v})
        return props

    def filesystem(self) -> pafs.S3FileSystem:
        kwargs: dict[str, Any] = dict(
            region=self.region, connect_timeout=self.connect_timeout,
            request_timeout=self.request_timeout,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            force_virtual_addressing=self.addressing == "virtual")
        if self.endpoint:
            kwargs["endpoint_override"] = self.endpoint
            if self.endpoint.startswith("http://"):
                kwargs["scheme"] = "http"
        if self.access_key_id:
            kwargs.update(access_key=self.access_key_id, secret_key=self.secret_access_key,
                          session_token=self.session_token)
        return pafs.S3FileSystem(**kwargs)

    def datafusion_store(self, bucket: str):
        """DataFusion's S3 object store for `bucket` (path-style requests to the endpoint).
        It retries failed requests itself, with backoff, for up to 10 attempts."""
        from datafusion.object_store import AmazonS3
        return AmazonS3(bucket, region=self.region, access_key_id=self.access_key_id,
                        secret_access_key=self.secret_access_key,
                        session_token=self.session_token, endpoint=self.endpoint,
                        allow_http=bool(self.endpoint and self.endpoint.startswith("http://")))

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> "S3Options":
        return cls(endpoint=props.get("s3.endpoint"), region=props.get("s3.region", DEFAULT_REGION),
                   access_key_id=props.get("s3.access-key-id"),
                   secret_access_key=props.get("s3.secret-access-key"),
                   session_token=props.get("s3.session-token"),
                   addressing=props.get(ADDRESSING_PROPERTY, "path"),
                   connect_timeout=float(props.get("s3.connect-timeout", cls.connect_timeout)),
                   request_timeout=float(props.get("s3.request-timeout", cls.request_timeout)),
                   max_attempts=int(props.get(RETRIES_PROPERTY, cls.max_attempts)),
                   cache_dir=props.get(CACHE_DIR_PROPERTY),
                   cache_bytes=int(props.get(CACHE_BYTES_PROPERTY, 0)))


class ObjectFileIO(PyArrowFileIO):
    """pyiceberg's PyArrowFileIO with OmniLake's S3 filesystem: retries with backoff and
    jitter, timeouts, path-style addressing. Chosen through the catalog property
    `py-io-impl`, so tables loaded from the catalog get it too."""

    def __init__(self, properties: Mapping[str, str] = {}):  # noqa: B006 - pyiceberg's signature
        super().__init__(properties)
        self.options = S3Options.from_properties(self.properties)
        self.cache = self.options.read_cache()

    def _initialize_s3_fs(self, netloc: str | None) -> pafs.FileSystem:
        return self.options.filesystem()

    def new_input(self, location: str) -> InputFile:
        """Objects are read through the local read cache when it is on (every Iceberg file
        is immutable, so a cached copy never goes stale)."""
        if self.cache is None or not is_object_store(location):
            return super().new_input(location)
        return _CachedInput(location, self)

    def local_copy(self, uri: str) -> str:
        """A local path of the object (through the cache), or `uri` itself when it is off."""
        if self.cache is None or not is_object_store(uri):
            return uri
        try:
            return self._fetch(uri)
        except OSError as exc:
            raise translate(exc, f"cannot read {uri}") from exc

    def _fetch(self, uri: str) -> str:
        bucket, key = split(uri)
        fs = self.fs_by_scheme("s3", bucket)
        return self.cache.fetch(uri, lambda: fs.open_input_stream(f"{bucket}/{key}"))


class _CachedInput(InputFile):
    """An InputFile that downloads into the read cache when first opened."""

    def __init__(self, location: str, io: ObjectFileIO):
        super().__init__(location)
        self._io = io

    def _local(self) -> InputFile:
        return PyArrowFileIO.new_input(self._io, self._io._fetch(self.location))

    def __len__(self) -> int:
        return len(self._local())

    def exists(self) -> bool:
        return PyArrowFileIO.new_input(self._io, self.location).exists()  # asks the store

    def open(self, seekable: bool = True):
        return self._local().open(seekable)


# -- errors ----------------------------------------------------------------------------------
_KINDS: list[tuple[tuple[str, ...], str, str]] = [
    (("NETWORK_CONNECTION", "Could not connect", "Couldn't connect", "connection refused",
      "error sending request", "timed out", "Timeout was reached", "REQUEST_TIMEOUT",
      "dns error", "Could not resolve"),
     "08001", "check that the S3 endpoint (s3_endpoint / AWS_ENDPOINT_URL) is reachable"),
    (("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
      "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "Forbidden", "HTTP status 403",
      "status 403"),
     "28000", "check the S3 credentials (s3_access_key_id / AWS_ACCESS_KEY_ID and the secret)"),
    (("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist"),
     "58P01", "create the bucket first, or check its name in the warehouse URI"),
]


def translate(exc: BaseException, what: str) -> E.OperationalError:
    """An object-store failure as an OperationalError: SQLSTATE 08001 for an unreachable
    store, 28000 for refused credentials, 58P01 for a missing bucket, 58030 (I/O error)
    otherwise."""
    message = " ".join(str(exc).split())
    for needles, sqlstate, hint in _KINDS:
        if any(n.lower() in message.lower() for n in needles):
            return E.OperationalError(f"{what}: {message}"[:600], hint=hint, sqlstate=sqlstate)
    return E.OperationalError(f"{what}: {message}"[:600], sqlstate="58030",
                              hint="object storage failed; the statement can be retried")


def check_bucket(fs: pafs.FileSystem, uri: str) -> None:
    """Fail fast, and clearly, when the store is unreachable, refuses the credentials or has
    no such bucket: one listing of the warehouse prefix."""
    bucket, _ = split(uri)
    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        raise translate(exc, f"cannot open warehouse {uri}") from exc
    if info.type == pafs.FileType.NotFound:
        raise E.OperationalError(f"cannot open warehouse {uri}: bucket {bucket!r} does not exist",
                                 sqlstate="58P01", hint=_KINDS[2][2])


def remove_prefix(fs: pafs.FileSystem, uri: str) -> None:
    """Delete every object under `uri` (a dropped table's folder)."""
    bucket, prefix = split(uri)
    if not prefix:
        raise E.InternalError(f"refusing to delete a whole bucket ({uri})")
    try:
        fs.delete_dir(f"{bucket}/{prefix}")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise translate(exc, f"cannot delete {uri}") from exc


def list_files(fs: pafs.FileSystem, uri: str) -> list[tuple[str, int, float]]:
    """(uri, size, modified time in epoch seconds) of every object under `uri`."""
    bucket, prefix = split(uri)
    scheme = uri.split("://", 1)[0]
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/{prefix}", allow_not_found=True,
                                                   recursive=True))
    except OSError as exc:
        raise translate(exc, f"cannot list {uri}") from exc
    return [(f"{scheme}://{info.path}", info.size or 0,
             info.mtime.timestamp() if info.mtime else 0.0)
            for info in infos if info.type == pafs.FileType.File]
