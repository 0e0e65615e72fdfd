"""Sorted indexes of integer key chunks, for key lookups (engine/key_lookup.py).

A key lookup compares the key column of every chunk that the zone maps keep. Keys in
insertion order fall in one chunk; random keys (hashed ids, keys from another system) fall
anywhere, so every chunk is scanned: 1M rows, 1.1-1.7 ms a lookup. A chunk of a data file
(immutable; the column cache holds it) that serves a second lookup gets an index here: its
values sorted with their positions, so the next lookups are two binary searches (1M random
keys: 0.3-0.7 ms a lookup). Memtable chunks change with every write and are scanned.

Entries are keyed by the chunk object, least recently used dropped first, bounded in bytes
(12 a row: the sorted values and 32-bit positions). A chunk is known through a weak
reference, so an index never keeps a chunk alive that the column cache has let go of: the
index goes with it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np
import pyarrow as pa

MIN_ROWS = 4096                    # smaller chunks are scanned: cheaper than an index
MAX_BYTES = 128 * 1024 * 1024      # of indexes; ~11M rows of keys
_SEEN = 4096                       # chunks seen once, remembered for their second lookup


class KeyIndexes:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._indexes: OrderedDict[int, tuple[weakref.ref, np.ndarray, np.ndarray]] = OrderedDict()
        self._seen: OrderedDict[int, weakref.ref] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()  # a weakref callback may run while it is held

    def positions(self, chunk: pa.Array, value: int, build: bool = True) -> np.ndarray | None:
        """Sorted positions of `value` in `chunk` (integers, no NULLs); None while the chunk
        has no index yet (the caller scans it). `build=False`: an index is only used, and
        the lookup is not counted towards building one."""
        key = id(chunk)
        with self._lock:
            entry = self._indexes.get(key)
            if entry is not None and entry[0]() is chunk:
                self._indexes.move_to_end(key)
                _, ordered, order = entry
            elif not build:
                return None
            else:
                seen = self._seen.pop(key, None)
                if seen is None or seen() is not chunk:  # first lookup: remember, scan
                    self._seen[key] = weakref.ref(chunk)
                    if len(self._seen) > _SEEN:
                        self._seen.popitem(last=False)
                    return None
                ordered = None
        if ordered is None:
            ordered, order = self._build(key, chunk)
        low, high = ordered.searchsorted(value, "left"), ordered.searchsorted(value, "right")
        return np.sort(order[low:high]) if high > low else order[:0]

    def _build(self, key: int, chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        values = chunk.to_numpy()
        positions = np.int32 if len(values) < 2**31 else np.int64
        order = np.argsort(values, kind="stable").astype(positions)
        ordered = values[order]
        with self._lock:
            old = self._indexes.pop(key, None)
            if old is not None:
                self._bytes -= old[1].nbytes + old[2].nbytes
            self._indexes[key] = (weakref.ref(chunk, lambda _, k=key: self._forget(k)),
                                  ordered, order)
            self._bytes += ordered.nbytes + order.nbytes
            while self._bytes > self.max_bytes and len(self._indexes) > 1:
                _, (_, dropped, dropped_order) = self._indexes.popitem(last=False)
                self._bytes -= dropped.nbytes + dropped_order.nbytes
        return ordered, order

    def _forget(self, key: int) -> None:
        """A chunk went away (the column cache dropped it): its index goes too."""
        with self._lock:
            entry = self._indexes.get(key)
            if entry is not None and entry[0]() is None:
                del self._indexes[key]
                self._bytes -= entry[1].nbytes + entry[2].nbytes


KEY_INDEXES = KeyIndexes()
