"""Decoded columns of hot data files, kept in memory for DataFusion to scan.

Most of a warm query's time over Parquet is decoding: at TPC-H SF1 on 2 cores the geometric
mean of the 22 queries is about 2x lower with this cache than without (bench/RESULTS.md; q18
is the exception, see docs/architecture.md). Data files never change under
their name, so a file's decoded columns stay valid for as long as the file is read.

- A file is admitted on its second scan: a table read once (an ETL pass, a one-off question)
  goes through the streaming Parquet reader and leaves nothing behind.
- Only the columns statements read are cached; a scan that needs a column not yet held
  decodes it together with those held (one decode keeps the rows of all columns in the same
  order), through the same projection as the Parquet path, so types, renames and added
  columns are exactly the same.
- Small derivations of a file's columns are kept with it and not counted: integer ranges and
  min/max bounds per chunk, and series edges (`chunks(series=n)`), at most 1/8 of the rows of
  the columns they cut.
- Memory is bounded by `budget` bytes: least recently used files are dropped first, a file
  larger than the budget is never cached, and one scan takes about the budget at most (it
  may pass it by one file's columns; the rest of a larger scan streams from Parquet), so a scan larger than memory stays
  bounded.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datafusion import DataFrame, SessionContext

from omnilake.engine.zone_maps import ChunkFilter, ChunkMetrics, add_column
from omnilake.storage import memory_only

CHUNK_ROWS = 1 << 16  # rows per batch handed to DataFusion, and per zone of min/max bounds
SEEN_FILES = 100_000  # files remembered as scanned once (for admission)
FRAMES_PER_FILE = 8  # DataFrames kept per file, one per column set (and chunks) read
SURVIVORS_PER_FILE = 32  # filters remembered per file with the chunks they keep
EDGE_SHARE = 8  # series edges are kept only while at most 1/8 of a chunk's rows

_names = itertools.count()


def _nbytes(chunks: list[pa.Array]) -> int:
    return sum(chunk.nbytes for chunk in chunks)


def _key(column) -> tuple:
    """What a decoded column holds: its field id and type (an ALTER of the type decodes it
    again; a rename does not)."""
    return column.field_id, str(column.sql_type)


@dataclass
class _Entry:
    """One file's decoded columns. All come from one decode of the file, so their rows line
    up: DataFusion reads a file in parallel and two decodes need not give the same order."""

    rows: int
    columns: dict[tuple, list[pa.Array]]  # column key -> its chunks (same bounds for all)
    sources: dict[tuple, object]  # column key -> the column it was decoded as
    nbytes: int = 0
    # (keys, schema, chunks) -> (DataFrame, rows)
    frames: OrderedDict = field(default_factory=OrderedDict)
    measured: dict = field(default_factory=dict)  # field id -> per-chunk ChunkMetrics
    ranges: dict = field(default_factory=dict)  # column key -> (min, max) per chunk, integers
    survivors: OrderedDict = field(default_factory=OrderedDict)  # filter -> (chunks kept,)
    # series column keys + time key -> per-chunk edge positions (None: not ordered so);
    # (that key, column key) -> the column's chunks taken at those positions
    edges: dict = field(default_factory=dict)


class ScanBudget:
    """What one scan may still take from the cache, in bytes."""

    def __init__(self, limit: int):
        self.left = limit


class ColumnCache:
    """Per-engine LRU of data files' decoded columns. Thread-safe."""

    def __init__(self, budget: int, partitions: int):
        self.budget = budget
        self.partitions = max(1, partitions)
        self._files: OrderedDict[str, _Entry] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.loads = 0
        self.chunks_skipped = 0

    def scan_budget(self) -> ScanBudget:
        return ScanBudget(self.budget)

    def frame(self, ctx: SessionContext, uri: str, columns: list, schema: pa.Schema,
              allowance: ScanBudget, decode: Callable[[list], list[pa.Table]],
              keep: ChunkFilter | None = None) -> tuple[DataFrame, int] | None:
        """The file's rows in `columns` (the scan's columns, `schema` their Arrow schema) as
        an in-memory DataFrame and how many rows it holds, or None when the file should be
        read from Parquet instead.
        `decode(columns)` reads the given columns of the file, in that order, as one table
        per partition of the read (each a contiguous run of the file). With `keep`
        (the scan's filter), chunks whose bounds rule out every match are left out."""
        if self.budget <= 0 or allowance.left <= 0:
            return None
        keys = [_key(c) for c in columns]
        with self._lock:
            entry = self._files.get(uri)
            if entry is None and uri not in self._seen:
                self._seen[uri] = None  # first scan: read from Parquet, admit on the next
                while len(self._seen) > SEEN_FILES:
                    self._seen.popitem(last=False)
                return None
            if entry is not None:
                self._files.move_to_end(uri)
            if entry is None or any(key not in entry.columns for key in keys):
                # Decode the new columns together with those held, so all rows line up.
                wanted = dict(zip(keys, columns))
                fields = {key[0] for key in keys}
                for key, column in (entry.sources.items() if entry is not None else ()):
                    if key[0] not in fields:  # (one whose type changed is decoded anew)
                        wanted[key] = column
                entry = None
        if entry is None:
            parts = decode(list(wanted.values()))
            with self._lock:
                self.loads += 1
            chunks = self._chunks(parts)
            columns_held = {key: [chunk.column(i) for chunk in chunks] for i, key in enumerate(wanted)}
            entry = _Entry(sum(chunk.num_rows for chunk in chunks), columns_held, wanted,
                           sum(chunk.nbytes for chunk in chunks))
        survivors = self._survivors(entry, keys, keep) if keep is not None else None
        frame_key = (tuple(keys), schema, survivors)
        chunks = [entry.columns[key] for key in keys]
        allowance.left -= sum(_nbytes(c) for c in chunks)
        with self._lock:
            if survivors is not None:
                self.chunks_skipped += len(chunks[0]) - len(survivors)
            found = entry.frames.get(frame_key)
            if found is not None:
                entry.frames.move_to_end(frame_key)
                self.hits += 1
                return found
        if survivors is not None:
            chunks = [[column[i] for i in survivors] for column in chunks]
        rows = sum(len(chunk) for chunk in chunks[0]) if chunks else 0
        found = (self._dataframe(ctx, chunks, schema), rows)
        if entry.nbytes > self.budget:  # never cached: it would push out everything else
            return found
        with self._lock:
            held = self._files.get(uri)
            if held is not entry:
                if held is not None:
                    self.nbytes -= held.nbytes
                self._files[uri] = entry
                self.nbytes += entry.nbytes
            entry.frames[frame_key] = found
            while len(entry.frames) > FRAMES_PER_FILE:
                entry.frames.popitem(last=False)
            self._files.move_to_end(uri)
            self._evict()
        return found

    def chunks(self, uri: str, columns: list, keep: ChunkFilter | None = None,
               ranges: dict | None = None, series: int = 0) -> list[list[pa.Array]] | None:
        """The file's held chunks of `columns` (per column, the chunks that may match
        `keep`, and whose values of the integer columns `ranges` names, {index in
        `columns`: value}, may include those values), for a statement that reads them
        without DataFusion (engine/key_lookup.py); None unless every column is held.
        Admits nothing: a miss is the caller's to scan.

        With `series` = n > 0, `columns[:n]` are key columns (tags of a time series, say) and
        `columns[n]` a time: each chunk comes back cut to its series edges, the first and
        last row of every run of rows with equal keys (see series_edges). Those hold each
        key's earliest and latest row when time never decreases within a run, as in a file
        sorted by (tags, time); None when the file is not so ordered."""
        if self.budget <= 0:
            return None
        keys = [_key(c) for c in columns]
        with self._lock:
            entry = self._files.get(uri)
            if entry is None or any(key not in entry.columns for key in keys):
                return None
            self._files.move_to_end(uri)
            self.hits += 1
        held = [entry.columns[key] for key in keys]
        if series:
            held = self._edges(entry, keys, series)
            if held is None:
                return None
        survivors = self._survivors(entry, keys, keep) if keep is not None else None
        kept = np.ones(len(held[0]), dtype=bool) if held else np.ones(0, dtype=bool)
        if survivors is not None:
            kept[:] = False
            kept[list(survivors)] = True
        for i, value in (ranges or {}).items():
            low, high = self._ranges(entry, keys[i])
            kept &= (low <= value) & (value <= high)
        return [[chunk for chunk, k in zip(column, kept) if k] for column in held]

    def _ranges(self, entry: _Entry, key: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) of each chunk of an integer column; an all-NULL chunk gets an empty
        range (min > max). Kept with the file."""
        found = entry.ranges.get(key)
        if found is None:
            memory_only.check(False, "a file's batch bounds")  # (grows with the file)
            bounds = [pc.min_max(chunk) for chunk in entry.columns[key]]
            low = np.array([b["min"].as_py() if b["min"].is_valid else 1 for b in bounds],
                           dtype=np.int64)
            high = np.array([b["max"].as_py() if b["max"].is_valid else 0 for b in bounds],
                            dtype=np.int64)
            found = entry.ranges[key] = (low, high)
        return found

    def _edges(self, entry: _Entry, keys: list[tuple], series: int) -> list | None:
        """Each column's chunks cut to the series edges of the file (kept with the file:
        a few rows per series and chunk)."""
        order = tuple(keys[:series + 1])
        positions = entry.edges.get(order, False)
        if positions is False:
            found = [series_edges([entry.columns[key][i] for key in order[:-1]],
                                  entry.columns[order[-1]][i])
                     for i in range(len(entry.columns[order[0]]))]
            positions = entry.edges[order] = None if any(p is None for p in found) else found
        if positions is None:
            return None
        held = []
        for key in keys:
            cut = entry.edges.get((order, key))
            if cut is None:
                cut = entry.edges[(order, key)] = [
                    _take(chunk, taken) for chunk, taken in zip(entry.columns[key], positions)]
            held.append(cut)
        return held

    def _survivors(self, entry: _Entry, keys: list[tuple], keep: ChunkFilter) -> tuple | None:
        """The numbers of the chunks that may hold rows matching `keep`; None for all."""
        found = entry.survivors.get(keep.key)
        if found is not None:
            return found[0]
        try:
            wanted = keep.field_ids
        except Exception:  # a filter pyiceberg cannot bind (the scan falls back the same way)
            return None
        held = {key[0]: key for key in keys}
        types = keep.types
        for field_id in wanted:
            if field_id in held and field_id not in entry.measured and field_id in types:
                metrics = [ChunkMetrics(0) for _ in entry.columns[held[field_id]]]
                add_column(metrics, field_id, types[field_id], entry.columns[held[field_id]])
                entry.measured[field_id] = metrics  # (a whole list at once: threads may race)
        n = len(entry.columns[keys[0]]) if keys else 0
        per_chunk = [ChunkMetrics(len(entry.columns[keys[0]][i]) if keys else 0)
                     for i in range(n)]
        for field_id, metrics in list(entry.measured.items()):
            for combined, one in zip(per_chunk, metrics):
                combined.merge(one, field_id)
        kept = tuple(i for i, metrics in enumerate(per_chunk) if keep.might_match(metrics))
        result = None if len(kept) == n else kept
        with self._lock:
            entry.survivors[keep.key] = (result,)
            while len(entry.survivors) > SURVIVORS_PER_FILE:
                entry.survivors.popitem(last=False)
        return result

    def _evict(self) -> None:
        while self.nbytes > self.budget and self._files:
            _, old = self._files.popitem(last=False)
            self.nbytes -= old.nbytes

    def _chunks(self, parts: list[pa.Table]) -> list[pa.RecordBatch]:
        """The decoded rows as batches of up to CHUNK_ROWS rows, each with buffers of its own
        (DataFusion sizes a batch by its buffers: slices of one big array would each count it
        whole, and the planner would then pick the wrong side of a join to build), at least
        one per partition where there are enough rows. `parts` are the decode's partitions,
        each a contiguous run of the file: a chunk never mixes two, so that the file's sort
        order shows in the chunks' bounds (engine/zone_maps.py)."""
        schema = parts[0].schema
        total = sum(part.num_rows for part in parts)
        target = max(8192, min(CHUNK_ROWS, -(-total // self.partitions)))
        chunks = []
        for part in parts:
            group, rows = [], 0
            for batch in part.to_batches():
                group.append(batch)
                rows += batch.num_rows
                if rows >= target:
                    chunks.append(pa.Table.from_batches(group).combine_chunks().to_batches()[0])
                    group, rows = [], 0
            if group:
                chunks.append(pa.Table.from_batches(group, schema=schema).combine_chunks()
                              .to_batches()[0])
        if not chunks:
            chunks.append(pa.RecordBatch.from_pylist([], schema=schema))
        return chunks

    def _dataframe(self, ctx: SessionContext, columns: list[list[pa.Array]],
                   schema: pa.Schema) -> DataFrame:
        """A DataFrame over the columns' chunks: contiguous runs of chunks per partition, as
        DataFusion splits a Parquet file, so the partitions scan in parallel and sorted data
        stays sorted within each. Not left registered in the context: the DataFrame holds its
        table itself."""
        batches = [pa.RecordBatch.from_arrays(list(arrays), schema=schema)
                   for arrays in zip(*columns)]
        per_partition = -(-len(batches) // self.partitions)
        partitions = [batches[i:i + per_partition] for i in range(0, len(batches), per_partition)]
        name = f"__ol_cached_{next(_names)}"
        frame = ctx.create_dataframe(partitions, name=name, schema=schema)
        ctx.deregister_table(name)
        return frame

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._seen.clear()
            self.nbytes = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"files": len(self._files), "bytes": self.nbytes, "budget": self.budget,
                    "hits": self.hits, "loads": self.loads,
                    "chunks_skipped": self.chunks_skipped}


def series_edges(series: list[pa.Array], times: pa.Array) -> np.ndarray | None:
    """Positions of the first and last row of each run of equal `series` values (NULL equal
    to NULL), in order; None when `times` has a NULL or decreases within a run, or when
    the edges would be more than 1/EDGE_SHARE of the rows (too many series to gain)."""
    n = len(times)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if times.null_count:
        return None
    change = np.zeros(n - 1, dtype=bool)
    for values in series:
        if pa.types.is_null(values.type):
            continue  # all NULL: one run
        if pa.types.is_string_view(values.type) or pa.types.is_binary_view(values.type):
            values = values.cast(pa.large_binary())
        after, before = values.slice(1), values.slice(0, n - 1)
        differs = pc.not_equal(after, before)
        if differs.null_count:  # NULL against a value differs; two NULLs do not
            differs = pc.if_else(pc.and_(pc.is_null(after), pc.is_null(before)), False,
                                 pc.fill_null(differs, True))
        change |= differs.to_numpy(zero_copy_only=False)
    time = times.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if np.any((time[1:] < time[:-1]) & ~change):
        return None
    starts = np.flatnonzero(change) + 1
    edges = np.unique(np.concatenate([[0], starts, starts - 1, [n - 1]]))
    return edges if len(edges) * EDGE_SHARE <= n or n <= EDGE_SHARE * 2 else None


def _take(chunk: pa.Array, positions: np.ndarray) -> pa.Array:
    """`chunk.take(positions)`; string_view/binary_view (what DataFusion reads text as, and
    take has no kernel for) come back as large_string/large_binary."""
    if pa.types.is_string_view(chunk.type):
        chunk = chunk.cast(pa.large_string())
    elif pa.types.is_binary_view(chunk.type):
        chunk = chunk.cast(pa.large_binary())
    return chunk.take(pa.array(positions))
