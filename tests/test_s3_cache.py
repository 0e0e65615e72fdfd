"""The local read cache of object-storage warehouses: counters from SQL and the CLI, the size
bound with least-recently-used eviction, and several processes sharing one folder."""

from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

import omnilake
from omnilake.storage.readcache import ReadCache


def _stats(conn) -> dict:
    cur = conn.cursor()
    cur.execute("SELECT hits, misses, entries, bytes, enabled FROM omnilake_system.read_cache")
    hits, misses, entries, size, enabled = cur.fetchone()
    return {"hits": hits, "misses": misses, "entries": entries, "bytes": size, "enabled": enabled}


@pytest.mark.s3
def test_scans_read_through_the_cache(s3_warehouse, tmp_path):
    with omnilake.connect(**s3_warehouse) as conn:
        conn.sql("CREATE TABLE t (a INT)")
        for i in range(3):
            conn.sql(f"INSERT INTO t VALUES ({i})")
            conn.flush()
        first = _stats(conn)
        assert conn.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(3,)]
        second = _stats(conn)
        assert conn.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(3,)]
        third = _stats(conn)
    assert first["enabled"] and second["misses"] > first["misses"]
    assert third["hits"] >= second["hits"] + 3  # the three data files, from local disk
    assert third["misses"] == second["misses"]
    assert third["entries"] > 0 and third["bytes"] > 0
    objects = list((tmp_path / "cache" / "objects").iterdir())
    assert len(objects) == third["entries"]
    # The CLI reads the same counters (summed over processes) from the same folder.
    out = subprocess.run([sys.executable, "-m", "omnilake", "stats", "--cache-dir",
                          str(tmp_path / "cache")], capture_output=True, text=True, timeout=60,
                         cwd=os.path.expanduser("~"))  # not the checkout: its omnilake/ would shadow the install
    assert out.returncode == 0, out.stderr
    assert f"read_cache.hits: {third['hits']}" in out.stdout


@pytest.mark.s3
def test_cache_off(s3_warehouse):
    with omnilake.connect(**s3_warehouse, cache_size=0) as conn:
        conn.sql("CREATE TABLE t (a INT); INSERT INTO t VALUES (5)")
        conn.flush()
        assert conn.cursor().execute("SELECT a FROM t").fetchall() == [(5,)]
        assert _stats(conn)["enabled"] is False


def _source(data: bytes):
    return lambda: io.BytesIO(data)


def test_size_bound_evicts_least_recently_used(tmp_path):
    cache = ReadCache(tmp_path, max_bytes=250, grace_s=0)
    paths = {}
    for name in "abc":
        paths[name] = cache.fetch(f"s3://b/{name}", _source(name.encode() * 100))
        time.sleep(0.02)  # distinct modification times
    assert not os.path.exists(paths["a"]) and os.path.exists(paths["c"])
    cache.fetch("s3://b/b", _source(b"unused"))  # a hit: "b" becomes the most recent
    time.sleep(0.02)
    cache.fetch("s3://b/d", _source(b"d" * 100))
    assert os.path.exists(paths["b"]) and not os.path.exists(paths["c"])
    stats = cache.stats()
    assert stats["bytes"] <= 250 and stats["evictions"] == 2
    assert (stats["hits"], stats["misses"]) == (1, 4)


def test_recently_used_copies_are_kept_past_the_limit(tmp_path):
    cache = ReadCache(tmp_path, max_bytes=10, grace_s=3600)
    first = cache.fetch("s3://b/x", _source(b"x" * 100))
    cache.fetch("s3://b/y", _source(b"y" * 100))
    assert open(first, "rb").read() == b"x" * 100  # handed out a moment ago: still there


def _worker(folder: str, rounds: int) -> None:
    cache = ReadCache(folder, max_bytes=3000, grace_s=0)
    for round_ in range(rounds):
        for i in range(10):
            path = cache.fetch(f"s3://b/{i}", _source(bytes([i]) * 500))
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue  # evicted by the other process between fetch and open
            assert data == bytes([i]) * 500, (round_, i, len(data))


def test_processes_share_a_folder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(str(tmp_path), 5)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    stats = ReadCache(tmp_path, max_bytes=3000).stats()
    assert stats["hits"] + stats["misses"] == 2 * 5 * 10
    assert not list((tmp_path / "tmp").iterdir())  # no partial downloads left behind


def test_a_busy_counter_database_is_retried(tmp_path, monkeypatch):
    import sqlite3
    cache = ReadCache(tmp_path, max_bytes=3000)
    real, failures = ReadCache._db, [sqlite3.OperationalError("database is locked")] * 2

    def busy_at_first(self):
        if failures:
            raise failures.pop()
        return real(self)
    monkeypatch.setattr(ReadCache, "_db", busy_at_first)
    cache.fetch("s3://b/x", _source(b"x" * 10))
    monkeypatch.setattr(ReadCache, "_db", real)
    assert cache.stats()["misses"] == 1  # counted after two refusals
