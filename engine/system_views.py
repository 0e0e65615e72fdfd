"""`omnilake_system.*`: the engine's own state as tables. `read_cache` holds the counters of
the local read cache of object-storage warehouses (storage/readcache.py), summed over every
process that shares its folder; `column_cache` those of this process's in-memory cache of
decoded columns (engine/column_cache.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from omnilake import errors as E

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

SCHEMA = "omnilake_system"

_CACHE_COLUMNS = pa.schema([
    ("folder", pa.string()), ("enabled", pa.bool_()), ("max_bytes", pa.int64()),
    ("bytes", pa.int64()), ("entries", pa.int64()), ("hits", pa.int64()), ("misses", pa.int64()),
    ("bytes_from_cache", pa.int64()), ("bytes_downloaded", pa.int64()),
    ("evictions", pa.int64())])


def read_cache_stats(settings) -> dict:
    """The read cache's counters for these settings (zeros where it is off)."""
    cache = settings.s3_options().read_cache()
    if cache is None:
        return {"folder": settings.cache_dir, "enabled": False, "max_bytes": 0, "bytes": 0,
                "entries": 0, "hits": 0, "misses": 0, "bytes_from_cache": 0,
                "bytes_downloaded": 0, "evictions": 0}
    return {**cache.stats(), "enabled": True}


_COLUMN_CACHE_COLUMNS = pa.schema([
    ("files", pa.int64()), ("bytes", pa.int64()), ("budget", pa.int64()), ("hits", pa.int64()),
    ("loads", pa.int64()), ("chunks_skipped", pa.int64())])


def system_table(session: "Session", name: str) -> pa.Table:
    if name == "column_cache":
        stats = session.engine.column_cache.stats()
        return pa.Table.from_pylist([stats], schema=_COLUMN_CACHE_COLUMNS)
    if name == "read_cache":
        stats = read_cache_stats(session.engine.settings)
        return pa.Table.from_pylist([{f.name: stats.get(f.name) for f in _CACHE_COLUMNS}],
                                    schema=_CACHE_COLUMNS)
    raise E.UndefinedTable(f'relation "{SCHEMA}.{name}" does not exist',
                           hint="system tables: read_cache, column_cache")
