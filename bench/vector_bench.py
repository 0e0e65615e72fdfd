"""Vector search benchmark: OmniLake (SQL and conn.vector_search) against raw faiss with the
same vectors and parameters, and DuckDB's brute-force `array_distance`, in one run.

Data: `--rows` clustered float32 vectors of `--dim` dimensions (Gaussian blobs around
`--clusters` centres), a `cat` column uniform in 0..99 for filtered searches, and
`--queries` query vectors from the same distribution. Ground truth is exact brute force on
the NumPy kernel. Reports recall@k, single-query latency (p50/p99) and QPS, index build time
and index size; filtered recall at 1%, 10% and 50% selectivity with the number of rows
returned.

    python bench/vector_bench.py --rows 200000 --results bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import re
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

import omnilake
import omnilake.engine.vector_index  # noqa: F401 - loaded now: the run uses one version of
import omnilake.engine.vector_search  # noqa: F401 - the code even if the tree changes meanwhile
from omnilake.config import Settings
from omnilake.engine.vector_index import OPTIONS
from omnilake.gpu import kernels

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from results import write_section  # noqa: E402


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(scale=3.0, size=(clusters, dim))
    return (centres[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


def bench_vectors(args) -> tuple[np.ndarray, np.ndarray, str]:
    """(base, queries, a description): the `--vectors` file's (real text embeddings from
    bench/text_embeddings.py), else clustered random vectors."""
    if args.vectors:
        saved = np.load(args.vectors)
        data = np.ascontiguousarray(saved["base"][:args.rows], dtype=np.float32)
        queries = np.ascontiguousarray(saved["queries"][:args.queries], dtype=np.float32)
        return data, queries, (
            f"real text embeddings (all-MiniLM-L6-v2 of docstring sentences, unit length; "
            f"{len(queries)} held-out sentences as queries; bench/text_embeddings.py)")
    return (clustered(args.rows, args.dim, args.clusters, 1),
            clustered(args.queries, args.dim, args.clusters, 2),
            f"clustered vectors ({args.clusters} clusters)")


def text(v: np.ndarray) -> str:
    return "'[" + ",".join(f"{x:.6f}" for x in v) + "]'"


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "qps": float(len(ms) / (ms.sum() / 1000))}


def recall_of(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def row(name: str, recall: float, stats: dict[str, float], extra: str = "") -> str:
    return (f"| {name} | {recall:.3f} | {stats['p50']:.2f} | {stats['p99']:.2f} | "
            f"{stats['qps']:.0f} | {extra} |")


def timed(search, queries) -> tuple[list[list[int]], list[float]]:
    """The ids `search(q)` returns for each query, and each call's wall time."""
    found, times = [], []
    for q in queries:
        started = time.perf_counter()
        found.append(search(q))
        times.append(time.perf_counter() - started)
    return found, times


def sql_search(cur, sql: str):
    def search(q):
        cur.execute(sql, (q,))
        return [r[0] for r in cur.fetchall()]
    return search


def run_filtered(cur, data, queries, cat, k, label):
    results = []
    for limit in (1, 10, 50):
        keep = np.nonzero(cat < limit)[0]
        _, sub_truth = kernels.topk(queries[:50], data[keep], k, "l2")
        sub_truth = keep[sub_truth]
        fsql = f"SELECT id FROM items WHERE cat < {limit} ORDER BY v <-> %s LIMIT {k}"
        # Warm up: a connection's first search loads the segment and the filter's row mask
        # (both cached), which would otherwise be the p99.
        cur.execute(fsql, (queries[-1],))
        cur.fetchall()
        found, times = timed(sql_search(cur, fsql), queries[:50])
        counts = [len(ids) for ids in found]
        cur.execute("EXPLAIN " + fsql.replace("%s", text(queries[0])))
        plan = next(line for _, line in cur.fetchall() if line.startswith("VectorSearch"))
        how = "filter-first (exact)" if "filter_first_sources=1" in plan else "index + ID filter"
        results.append((label, limit, recall_of(found, sub_truth, k), latency_stats(times),
                        min(counts), how))
    return results


def lancedb_rows(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> list[str]:
    """LanceDB on the same vectors: its default index (IVF_PQ) and its HNSW variant
    (IVF_HNSW_SQ), each at LanceDB's default build and search settings."""
    try:
        import lancedb
    except ImportError:
        print("lancedb is not installed: skipped (pip install lancedb)", flush=True)
        return []
    folder = tempfile.mkdtemp(prefix="omnilake-vbench-lance-")
    out = []
    try:
        db = lancedb.connect(folder)
        n, d = data.shape
        table = db.create_table("items", data=pa.table({
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), d)}))
        for index_type in ("IVF_PQ", "IVF_HNSW_SQ"):
            started = time.perf_counter()
            table.create_index(metric="l2", vector_column_name="vector", index_type=index_type,
                               replace=True)
            build_s = time.perf_counter() - started

            def search(q):
                return (table.search(q).limit(k).select(["id", "_distance"]).to_arrow()
                        .column("id").to_pylist())
            for q in queries[:5]:
                search(q)
            found, times = timed(search, queries)
            out.append(row(f"LanceDB {lancedb.__version__} {index_type} at its defaults",
                           recall_of(found, truth, k), latency_stats(times),
                           f"build {build_s:.1f} s"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--m", type=int, default=OPTIONS["hnsw"]["m"][0])
    parser.add_argument("--ef-construction", type=int, default=OPTIONS["hnsw"]["ef_construction"][0])
    parser.add_argument("--ef-search", type=int, default=None,
                        help="SET hnsw.ef_search (default: the engine's own choice, which "
                        "grows with the segment's rows; raw faiss gets what EXPLAIN shows)")
    parser.add_argument("--faiss-build", action=argparse.BooleanOptionalAction, default=True,
                        help="build raw faiss's own index; --no-faiss-build searches OmniLake's "
                        "segment with faiss directly (the same graph, no second build)")
    parser.add_argument("--duckdb-queries", type=int, default=20)
    parser.add_argument("--ivf", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure an IVF-flat index at the engine's defaults")
    parser.add_argument("--sweep", type=int, nargs="*", default=[40, 100, 200, 400],
                        help="more ef_search values to measure (100 queries each)")
    parser.add_argument("--vectors", default=None,
                        help="an .npz with `base` and `queries` matrices (bench/text_embeddings.py "
                        "makes one of real text embeddings) instead of clustered random vectors")
    parser.add_argument("--lancedb", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure LanceDB (when installed) on the same vectors")
    parser.add_argument("--results", default=None, help="write a section into this RESULTS.md")
    args = parser.parse_args()
    k = args.k
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    data, queries, source = bench_vectors(args)
    n, d = data.shape
    cat = np.random.default_rng(3).integers(0, 100, size=n).astype(np.int32)
    started = time.perf_counter()
    _, truth = kernels.topk(queries, data, k, "l2")
    truth_s = time.perf_counter() - started
    print(f"ground truth (NumPy kernel, {args.queries} queries): {truth_s:.1f}s", flush=True)

    folder = tempfile.mkdtemp(prefix="omnilake-vbench-")
    try:
        conn = omnilake.connect(folder)
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE items (id BIGINT, cat INT, v VECTOR({d}))")
        started = time.perf_counter()
        conn.insert("items", pa.table({
            "id": pa.array(np.arange(n, dtype=np.int64)), "cat": pa.array(cat),
            "v": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), d)}))
        conn.flush("items")
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        cur.execute(f"CREATE INDEX items_v ON items USING hnsw (v vector_l2_ops) "
                    f"WITH (m = {args.m}, ef_construction = {args.ef_construction})")
        build_s = time.perf_counter() - started
        segment_files = list(pathlib.Path(folder).rglob("*.faiss"))
        index_bytes = sum(p.stat().st_size for p in segment_files)
        if args.ef_search is not None:
            cur.execute(f"SET hnsw.ef_search = {args.ef_search}")
        sql = f"SELECT id FROM items ORDER BY v <-> %s LIMIT {k}"
        cur.execute("EXPLAIN " + sql.replace("%s", text(queries[0])))
        plan = next(line for _, line in cur.fetchall() if line.startswith("VectorSearch"))
        print(plan, flush=True)
        ef_search = int(re.search(r"ef_search=(\d+)", plan).group(1))
        segment = None
        if not args.faiss_build and len(segment_files) == 1:
            import faiss
            segment = faiss.read_index(str(segment_files[0]))

        # Warm the caches (segment and file rows), as a running server would be.
        for q in queries[:5]:
            cur.execute(sql, (q,))
            cur.fetchall()
        found, times = timed(sql_search(cur, sql), queries)
        sql_recall, sql_stats = recall_of(found, truth, k), latency_stats(times)

        def api_search(q):
            return conn.vector_search("items", q[None, :], k).column("id").to_pylist()
        found, times = timed(api_search, queries)
        api_recall, api_stats = recall_of(found, truth, k), latency_stats(times)
        started = time.perf_counter()
        batch = conn.vector_search("items", queries, k)
        batch_s = time.perf_counter() - started
        batch_found = [batch.filter(batch.column("query").to_numpy() == i).column("id").to_pylist()
                       for i in range(len(queries))]
        batch_recall = recall_of(batch_found, truth, k)

        # Filtered searches: cat < 1 (1%), < 10 (10%), < 50 (50%); with the default
        # filter-first limit, then with every filtered search through the index.
        exact_rows = Settings().vector_exact_rows
        filtered = run_filtered(cur, data, queries, cat, k, f"default (vector_exact_rows={exact_rows})")
        other = omnilake.connect(folder, vector_exact_rows=0)
        ocur = other.cursor()
        if args.ef_search is not None:
            ocur.execute(f"SET hnsw.ef_search = {args.ef_search}")
        filtered += run_filtered(ocur, data, queries, cat, k, "vector_exact_rows=0")
        other.close()

        # Recall against ef_search (the graph's quality on this data sets the defaults).
        sweep = {}
        for ef in args.sweep:
            cur.execute(f"SET hnsw.ef_search = {ef}")
            found, times = timed(sql_search(cur, sql), queries[:100])
            sweep[ef] = [recall_of(found, truth[:100], k), latency_stats(times)]
        cur.execute("RESET hnsw.ef_search" if args.ef_search is None
                    else f"SET hnsw.ef_search = {args.ef_search}")

        # Exact search without the index (the NumPy kernel), a few queries.
        cur.execute("DROP INDEX items_v")
        found, times = timed(sql_search(cur, sql), queries[:10])
        exact_recall, exact_stats = recall_of(found, truth[:10], k), latency_stats(times)

        # IVF-flat at the engine's defaults (lists per segment, ivfflat.probes).
        ivf = None
        if args.ivf:
            started = time.perf_counter()
            cur.execute("CREATE INDEX items_ivf ON items USING ivfflat (v vector_l2_ops)")
            ivf_build_s = time.perf_counter() - started
            cur.execute("EXPLAIN " + sql.replace("%s", text(queries[0])))
            ivf_plan = next(line for _, line in cur.fetchall() if line.startswith("VectorSearch"))
            probes = re.search(r"probes=(\d+)", ivf_plan).group(1)
            for q in queries[:5]:
                conn.vector_search("items", q[None, :], k)
            found, times = timed(api_search, queries)
            ivf = (recall_of(found, truth, k), latency_stats(times), ivf_build_s, probes)
        conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    # Raw faiss, same vectors and parameters.
    import faiss
    faiss_build_s = None
    if segment is not None:
        index = segment  # ids are row positions, which are the ids here
    else:
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(d, args.m)
        index.hnsw.efConstruction = args.ef_construction
        index.add(data)
        faiss_build_s = time.perf_counter() - started
    faiss_bytes = len(faiss.serialize_index(index))
    params = faiss.SearchParametersHNSW(efSearch=ef_search)
    # One query on one thread, as OmniLake searches it (gpu/ann.py): an OpenMP region over
    # busy cores costs milliseconds a query.
    faiss.omp_set_num_threads(1)
    def faiss_search(q):
        return index.search(q[None, :], k, params=params)[1][0].tolist()
    found, times = timed(faiss_search, queries)
    faiss_recall, faiss_stats = recall_of(found, truth, k), latency_stats(times)
    for ef in args.sweep:
        params = faiss.SearchParametersHNSW(efSearch=ef)  # faiss_search reads it
        found, times = timed(faiss_search, queries[:100])
        sweep[ef] += [recall_of(found, truth[:100], k), latency_stats(times)]

    duck = None
    if args.duckdb_queries:
        try:
            import duckdb
            con = duckdb.connect()
            con.execute(f"CREATE TABLE items (id BIGINT, v FLOAT[{d}])")
            con.register("src", pa.table({"id": pa.array(np.arange(n, dtype=np.int64)),
                                          "v": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), d)}))
            con.execute("INSERT INTO items SELECT * FROM src")
            def duck_search(q):
                return [r[0] for r in con.execute(
                    f"SELECT id FROM items ORDER BY array_distance(v, ?::FLOAT[{d}]) LIMIT {k}",
                    [q.tolist()]).fetchall()]
            found, times = timed(duck_search, queries[:args.duckdb_queries])
            duck = (recall_of(found, truth, k), latency_stats(times), duckdb.__version__)
        except Exception as exc:  # optional peer
            print(f"duckdb skipped: {exc}", flush=True)

    lance = lancedb_rows(data, queries, truth, k) if args.lancedb else []

    say(f"### Vector search: {n:,} x {d} {source}, k={k}, {len(queries)} queries")
    say("")
    say(f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, SHARED with other engineers' test runs: "
        "numbers are noisy. CPU only (NumPy kernel, faiss-cpu "
        f"{faiss.__version__}). HNSW m={args.m}, ef_construction={args.ef_construction}, "
        f"ef_search={ef_search} "
        f"({'set' if args.ef_search is not None else 'the engine default for this segment size'})"
        " for OmniLake and faiss alike"
        f"{'' if segment is None else ' (raw faiss searches the segment OmniLake built: the same graph)'}"
        + (". " if args.vectors else f". The issue asks for 1M x 128 (this run: {n:,} rows). ")
        + ("`python bench/vector_bench.py --vectors FILE`." if args.vectors
           else "`python bench/vector_bench.py --rows N`."))
    say("")
    say("| path | recall@10 | p50 ms | p99 ms | QPS (1 client) | notes |")
    say("|---|---|---|---|---|---|")
    say(row("OmniLake SQL (`ORDER BY v <-> %s LIMIT 10`, DB-API, numpy parameter)", sql_recall,
            sql_stats, "in process, warm caches"))
    say(row("OmniLake `conn.vector_search` (1 query per call)", api_recall, api_stats))
    say(f"| OmniLake `conn.vector_search` (all {len(queries)} queries in one call) | "
        f"{batch_recall:.3f} | | | {len(queries) / batch_s:.0f} | batch |")
    say(row("raw faiss IndexHNSWFlat (same vectors and parameters)" if segment is None else
            "raw faiss, OmniLake's segment searched directly (same graph)", faiss_recall, faiss_stats))
    if ivf is not None:
        say(row(f"OmniLake `conn.vector_search`, IVF-flat at defaults (lists sqrt(rows), "
                f"probes={ivf[3]})", ivf[0], ivf[1], f"build {ivf[2]:.1f} s"))
    say(row("OmniLake SQL, exact (no index; NumPy kernel), 10 queries", exact_recall, exact_stats))
    if duck is not None:
        say(row(f"DuckDB {duck[2]} brute force `array_distance`, {args.duckdb_queries} queries",
                duck[0], duck[1]))
    for line in lance:
        say(line)
    say("")
    say(f"Load (conn.insert + flush): {load_s:.1f} s. Index build: OmniLake CREATE INDEX "
        f"{build_s:.1f} s (faiss build + serialize + write), raw faiss "
        f"{'not built (same segment)' if faiss_build_s is None else f'{faiss_build_s:.1f} s'}. "
        f"Index size: OmniLake {index_bytes / 2**20:.1f} MiB on storage, raw faiss "
        f"{faiss_bytes / 2**20:.1f} MiB serialized.")
    say("")
    if sweep:
        say("ef_search sweep (100 queries; OmniLake SQL and raw faiss on the same index parameters):")
        say("")
        say("| ef_search | OmniLake SQL recall@10 | SQL p50 ms | faiss recall@10 | faiss p50 ms |")
        say("|---|---|---|---|---|")
        for ef, (r_sql, s_sql, r_faiss, s_faiss) in sorted(sweep.items()):
            say(f"| {ef} | {r_sql:.3f} | {s_sql['p50']:.2f} | {r_faiss:.3f} | {s_faiss['p50']:.2f} |")
        say("")
    say("Filtered (`WHERE cat < x ORDER BY v <-> q LIMIT 10`, 50 queries):")
    say("")
    say("| setting | selectivity | recall@10 | min rows returned | p50 ms | p99 ms | path |")
    say("|---|---|---|---|---|---|---|")
    for label, limit, rec, stats, least, how in filtered:
        say(f"| {label} | {limit}% | {rec:.3f} | {least} | {stats['p50']:.2f} | "
            f"{stats['p99']:.2f} | {how} |")
    if args.results:
        write_section(args.results, f"vector-{'text-' if args.vectors else ''}{n}", "\n".join(lines))


if __name__ == "__main__":
    main()
