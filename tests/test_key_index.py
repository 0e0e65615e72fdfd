"""Sorted indexes of integer key chunks (engine/key_index.py): a chunk is scanned at its
first lookup and indexed at its second; answers equal a scan; memory stays bounded."""

import gc

import numpy as np
import pyarrow as pa

from omnilake.engine.key_index import KeyIndexes


def _chunk(seed=0, n=10_000):
    rng = np.random.default_rng(seed)
    return pa.array(rng.integers(-500, 500, n), pa.int64())  # many duplicates


def test_first_lookup_scans_then_positions_equal_a_scan():
    indexes, chunk = KeyIndexes(), _chunk()
    values = chunk.to_numpy()
    assert indexes.positions(chunk, 7) is None  # seen once: the caller scans
    for value in (7, -500, 499, 1000, -501, 0):
        found = indexes.positions(chunk, value)
        assert found is not None
        assert found.tolist() == np.flatnonzero(values == value).tolist()  # sorted, all of them


def test_a_dropped_chunk_takes_its_index_along_and_the_budget_holds():
    indexes = KeyIndexes(max_bytes=3 * 12 * 10_000)  # three chunks' indexes
    chunks = [_chunk(seed) for seed in range(5)]
    for chunk in chunks:
        indexes.positions(chunk, 1)
        assert indexes.positions(chunk, 1) is not None
    assert len(indexes._indexes) == 3 and indexes._bytes <= indexes.max_bytes  # oldest dropped
    del chunks[4], chunk
    gc.collect()
    assert len(indexes._indexes) == 2 and indexes._bytes == 2 * 12 * 10_000
    same_id_later = _chunk(9)  # a new chunk never passes for a dropped one
    assert indexes.positions(same_id_later, 1) is None


def test_without_building_an_index_is_only_used():
    """build=False (a lookup that may not wait): no index is built, and the lookup does not
    count towards building one; an index built before is used."""
    indexes, chunk = KeyIndexes(), _chunk()
    for _ in range(3):
        assert indexes.positions(chunk, 7, build=False) is None
    assert not indexes._indexes
    assert indexes.positions(chunk, 7) is None  # still its first lookup
    assert indexes.positions(chunk, 7) is not None  # the second builds
    found = indexes.positions(chunk, 3, build=False)
    assert found.tolist() == np.flatnonzero(chunk.to_numpy() == 3).tolist()
