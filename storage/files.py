"""Data-file helpers that know nothing of SQL: local paths of file URIs and Parquet footers."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from omnilake.errors import OperationalError

FIELD_ID_KEY = b"PARQUET:field_id"


def local_path(uri: str) -> str:
    """The filesystem path of a `file://` URI or plain path."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    if "://" in uri:
        raise OperationalError(f"{uri}: only local files are supported in this version")
    return uri


@lru_cache(maxsize=4096)
def parquet_schema(path: str) -> pa.Schema:
    """Arrow schema of a Parquet file, read once: data files are immutable once committed."""
    try:
        return pq.read_schema(path)
    except FileNotFoundError as exc:
        raise OperationalError(f"data file {path} is missing",
                               hint="the warehouse folder was changed outside OmniLake") from exc
    except OSError as exc:
        raise OperationalError(f"cannot read data file {path}: {exc}") from exc


def top_level_field_ids(schema: pa.Schema) -> dict[int, pa.Field]:
    """Iceberg field id -> Arrow field, for the top-level columns that carry one."""
    ids = {}
    for f in schema:
        raw = (f.metadata or {}).get(FIELD_ID_KEY)
        if raw is not None:
            ids[int(raw)] = f
    return ids
