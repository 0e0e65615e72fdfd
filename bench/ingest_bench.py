"""Durable ingest: OmniLake's WAL + memtable path against DuckDB appends and plain pyiceberg
(one Iceberg commit per batch), on the same rows in one run.

Shapes: Arrow batches of 10k rows (conn.insert), executemany with 1k-row batches, single-row
INSERTs. OmniLake runs with durability=fsync (every acknowledged write fsynced). Also measured:
insert-to-visible latency (an INSERT returns -> a SELECT in another cursor sees the row).

Usage: python bench/ingest_bench.py [--rows 1000000] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa

import omnilake

SCHEMA_SQL = "(ts TIMESTAMP, device TEXT, temperature DOUBLE PRECISION, humidity REAL)"


def make_rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    base = np.datetime64("2026-01-01T00:00:00", "us")
    return pa.table({
        "ts": pa.array(base + np.arange(n) * 1000, pa.timestamp("us")),
        "device": pa.array([f"sensor-{i % 500}" for i in range(n)], pa.string()),
        "temperature": rng.normal(20, 5, n),
        "humidity": pa.array(rng.uniform(30, 70, n), pa.float32()),
    })


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def omnilake_rates(data: pa.Table, singles: int) -> dict:
    out = {}
    with omnilake.connect(tempfile.mkdtemp(prefix="ol-ingest-"), durability="fsync") as conn:
        conn.sql(f"CREATE TABLE arrow_t {SCHEMA_SQL}")
        conn.sql(f"CREATE TABLE many_t {SCHEMA_SQL}")
        conn.sql(f"CREATE TABLE single_t {SCHEMA_SQL}")
        seconds = timed(lambda: [conn.insert("arrow_t", data.slice(i, 10_000))
                                 for i in range(0, data.num_rows, 10_000)])
        out["arrow"] = data.num_rows / seconds
        rows = [tuple(r.values()) for r in data.slice(0, 200_000).to_pylist()]
        cur = conn.cursor()
        seconds = timed(lambda: [cur.executemany("INSERT INTO many_t VALUES (%s, %s, %s, %s)",
                                                 rows[i:i + 1000]) for i in range(0, len(rows), 1000)])
        out["executemany"] = len(rows) / seconds
        seconds = timed(lambda: [cur.execute("INSERT INTO single_t VALUES (%s, %s, %s, %s)", rows[i])
                                 for i in range(singles)])
        out["single"] = singles / seconds
        reader = conn.cursor()
        latencies = []
        for i in range(200):
            cur.execute("INSERT INTO single_t VALUES (%s, 'probe', %s, 0)", (rows[0][0], float(i)))
            t0 = time.perf_counter()  # from the INSERT's return until another cursor sees the row
            reader.execute("SELECT count(*) FROM single_t WHERE device = 'probe' AND temperature = %s",
                           (float(i),))
            assert reader.fetchone()[0] == 1
            latencies.append((time.perf_counter() - t0) * 1000)
        out["visible_p50_ms"] = statistics.median(latencies)
        out["visible_p99_ms"] = float(np.percentile(latencies, 99))
        out["flush_s"] = timed(conn.flush)
    return out


def duckdb_rates(data: pa.Table, singles: int) -> dict:
    out = {}
    path = os.path.join(tempfile.mkdtemp(prefix="duck-ingest-"), "db.duckdb")
    con = duckdb.connect(path)
    for name in ("arrow_t", "many_t", "single_t"):
        con.execute(f"CREATE TABLE {name} {SCHEMA_SQL}")
    batches = [data.slice(i, 10_000) for i in range(0, data.num_rows, 10_000)]

    def append_arrow():
        for batch in batches:
            con.register("batch", batch)
            con.execute("INSERT INTO arrow_t SELECT * FROM batch")
            con.unregister("batch")
    out["arrow"] = data.num_rows / timed(append_arrow)
    rows = [tuple(r.values()) for r in data.slice(0, 200_000).to_pylist()]
    out["executemany"] = len(rows) / timed(lambda: [con.executemany(
        "INSERT INTO many_t VALUES (?, ?, ?, ?)", rows[i:i + 1000]) for i in range(0, len(rows), 1000)])
    out["single"] = singles / timed(lambda: [con.execute("INSERT INTO single_t VALUES (?, ?, ?, ?)", rows[i])
                                            for i in range(singles)])
    con.close()
    return out


def pyiceberg_rates(data: pa.Table, batches: int) -> dict:
    from pyiceberg.catalog.sql import SqlCatalog
    folder = tempfile.mkdtemp(prefix="pi-ingest-")
    catalog = SqlCatalog("b", uri=f"sqlite:///{folder}/c.db", warehouse=f"file://{folder}")
    catalog.create_namespace("n")
    table = catalog.create_table("n.t", data.schema)
    parts = [data.slice(i * 10_000, 10_000) for i in range(batches)]
    seconds = timed(lambda: [table.append(p) for p in parts])
    return {"arrow": batches * 10_000 / seconds, "commit_ms": seconds / batches * 1000}


def report(rows: int, ours: dict, duck: dict, ice: dict) -> str:
    lines = [f"## Durable ingest ({dt.date.today()})", "",
             f"{rows:,} rows of (ts, device, temperature, humidity); {os.cpu_count()} cores, "
             f"{platform.machine()}; OmniLake with durability=fsync, DuckDB {duckdb.__version__} "
             "on a file, pyiceberg appending one commit per 10k-row batch. "
             "Command: `python bench/ingest_bench.py`.", "",
             "| shape | OmniLake rows/s | DuckDB rows/s | pyiceberg append rows/s |",
             "|---|---:|---:|---:|",
             f"| Arrow batches of 10k | {ours['arrow']:,.0f} | {duck['arrow']:,.0f} | {ice['arrow']:,.0f} |",
             f"| executemany, 1k-row batches | {ours['executemany']:,.0f} | {duck['executemany']:,.0f} | |",
             f"| single-row INSERT | {ours['single']:,.0f} | {duck['single']:,.0f} | |",
             "",
             f"Insert-to-visible (from the INSERT's return until another cursor's SELECT has "
             f"returned the row; the row is in the memtable before the INSERT returns): "
             f"p50 {ours['visible_p50_ms']:.2f} ms, p99 {ours['visible_p99_ms']:.2f} ms. "
             f"pyiceberg: {ice['commit_ms']:.0f} ms per commit. Flushing everything pending at the "
             f"end took {ours['flush_s']:.2f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    data = make_rows(args.rows)
    ours = omnilake_rates(data, args.singles)
    print("omnilake", ours, file=sys.stderr)
    duck = duckdb_rates(data, args.singles)
    print("duckdb", duck, file=sys.stderr)
    ice = pyiceberg_rates(data, batches=20)
    print("pyiceberg", ice, file=sys.stderr)
    text = report(args.rows, ours, duck, ice)
    print(text)
    if args.results:
        sys.path.insert(0, os.path.dirname(__file__))
        from results import write_section
        write_section(args.results, "ingest", text)


if __name__ == "__main__":
    main()
