"""Data-file helpers that know nothing of SQL: local paths of file URIs and Parquet footers
(of local files, or of objects read through a pyiceberg FileIO)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from omnilake.errors import OperationalError
from omnilake.storage import memory_only

FIELD_ID_KEY = b"PARQUET:field_id"


def local_path(uri: str) -> str:
    """The filesystem path of a `file://` URI or plain path."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    if "://" in uri:
        raise OperationalError(f"{uri}: not a local file")
    return uri


def is_local(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


class _Footers:
    """Parquet footers by file URI, read once: data files are immutable once committed."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uri: str, io=None) -> pq.FileMetaData:
        with self._lock:
            if uri in self._items:
                self._items.move_to_end(uri)
                return self._items[uri]
        metadata = _read_footer(uri, io)
        with self._lock:
            self._items[uri] = metadata
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return metadata


def _read_footer(uri: str, io) -> pq.FileMetaData:
    try:
        if is_local(uri) or io is None:
            return pq.read_metadata(local_path(uri))
        with io.new_input(uri).open() as stream:
            return pq.read_metadata(stream)
    except FileNotFoundError as exc:
        raise OperationalError(f"data file {uri} is missing", sqlstate="58P01",
                               hint="the warehouse was changed outside OmniLake") from exc
    except OSError as exc:
        if is_local(uri):
            raise OperationalError(f"cannot read data file {uri}: {exc}") from exc
        from omnilake.storage.objectstore import translate
        raise translate(exc, f"cannot read data file {uri}") from exc


_FOOTERS = _Footers()


def parquet_schema(uri: str, io=None) -> pa.Schema:
    """Arrow schema of a Parquet file: a local path or URI, or any URI `io` (a pyiceberg
    FileIO) can open."""
    return _FOOTERS.get(uri, io).schema.to_arrow_schema()


def has_single_valued_float_column(uri: str, io=None) -> bool:
    """Whether a floating-point column's Parquet statistics say min == max over the file.
    Parquet statistics leave NaN out, so such a column may still hold NaN beside that value;
    DataFusion 55 plans it as a constant and would return the value in place of the NaN.
    Asked for every file of every scan, so the answer is kept (a file never changes)."""
    answer = _SINGLE_VALUED.get(uri)
    if answer is not None:
        return answer
    memory_only.check(False, "a Parquet footer")
    try:
        metadata = _FOOTERS.get(uri, io)
    except OperationalError:
        if is_local(uri):
            return False
        raise
    answer = _single_valued_float_column(metadata)
    with _SINGLE_VALUED_LOCK:
        _SINGLE_VALUED[uri] = answer
        while len(_SINGLE_VALUED) > _FOOTERS.size:
            _SINGLE_VALUED.pop(next(iter(_SINGLE_VALUED)))
    return answer


_SINGLE_VALUED: dict[str, bool] = {}
_SINGLE_VALUED_LOCK = threading.Lock()


def _single_valued_float_column(metadata: pq.FileMetaData) -> bool:
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
