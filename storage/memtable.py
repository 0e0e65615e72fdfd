"""Memtable: acknowledged rows per table that are not in an Iceberg snapshot yet.

Each table has a lock. Whoever moves rows from the memtable into a snapshot (a flush) holds
it from before the commit until the rows are removed here; a reader holds it while it pins
the table's snapshot and copies the pending rows. So a reader sees every row exactly once:
either in the snapshot it pinned or in the memtable, never in both or neither.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa


MERGE_ROWS = 8192


@dataclass
class Pending:
    tables: list[pa.Table] = field(default_factory=list)
    max_lsn: int = 0
    rows: int = 0
    bytes: int = 0
    since: float = 0.0  # monotonic time of the oldest pending write
    table_uuid: str | None = None  # the table the rows belong to, whatever its name now


class Memtable:
    def __init__(self):
        self._pending: dict[str, Pending] = {}
        self._locks: dict[str, threading.RLock] = defaultdict(threading.RLock)
        self._guard = threading.Lock()

    def lock(self, key: str) -> threading.RLock:
        with self._guard:
            return self._locks[key]

    def add(self, key: str, rows: pa.Table, lsn: int, table_uuid: str | None = None) -> Pending:
        with self.lock(key):
            pending = self._pending.setdefault(key, Pending(since=time.monotonic(),
                                                            table_uuid=table_uuid))
            last = pending.tables[-1] if pending.tables else None
            if last is not None and last.num_rows + rows.num_rows <= MERGE_ROWS \
                    and last.schema.equals(rows.schema):
                # Small writes (single-row INSERTs) merge into one table, or every scan would
                # cast and hand DataFusion thousands of one-row tables.
                pending.tables[-1] = pa.concat_tables([last, rows]).combine_chunks()
            else:
                pending.tables.append(rows)
            pending.max_lsn = max(pending.max_lsn, lsn)
            pending.rows += rows.num_rows
            pending.bytes += rows.nbytes
            return pending

    def rows(self, key: str) -> list[pa.Table]:
        """The pending rows of a table (call with its lock held for a consistent read)."""
        with self.lock(key):
            pending = self._pending.get(key)
            return list(pending.tables) if pending else []

    def take(self, key: str) -> Pending | None:
        """Remove and return a table's pending rows (call with its lock held)."""
        with self.lock(key):
            return self._pending.pop(key, None)

    def restore(self, key: str, pending: Pending) -> None:
        """Put rows back after a failed flush, ahead of anything written since."""
        with self.lock(key):
            newer = self._pending.pop(key, None)
            if newer is not None:
                pending.tables.extend(newer.tables)
                pending.max_lsn = max(pending.max_lsn, newer.max_lsn)
                pending.rows += newer.rows
                pending.bytes += newer.bytes
            self._pending[key] = pending

    def keys(self) -> list[str]:
        with self._guard:
            return [k for k in self._pending]

    def stats(self, key: str) -> Pending | None:
        return self._pending.get(key)
