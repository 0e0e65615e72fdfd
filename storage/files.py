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


@lru_cache(maxsize=4096)
def has_single_valued_float_column(path: str) -> bool:
    """Whether a floating-point column's Parquet statistics say min == max over the file.
    Parquet statistics leave NaN out, so such a column may still hold NaN beside that value;
    DataFusion 55 plans it as a constant and would return the value in place of the NaN."""
    try:
        metadata = pq.read_metadata(path)
    except OSError:
        return False
    bounds: dict[str, list] = {}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.physical_type not in ("FLOAT", "DOUBLE"):
                continue
            stats = chunk.statistics
            if stats is None or not stats.has_min_max:
                continue
            low_high = bounds.setdefault(chunk.path_in_schema, [stats.min, stats.max])
            low_high[0], low_high[1] = min(low_high[0], stats.min), max(low_high[1], stats.max)
    return any(low == high for low, high in bounds.values())


def top_level_field_ids(schema: pa.Schema) -> dict[int, pa.Field]:
    """Iceberg field id -> Arrow field, for the top-level columns that carry one."""
    ids = {}
    for f in schema:
        raw = (f.metadata or {}).get(FIELD_ID_KEY)
        if raw is not None:
            ids[int(raw)] = f
    return ids
