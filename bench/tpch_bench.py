"""TPC-H through OmniLake (Iceberg tables), raw DataFusion and DuckDB (the same Parquet files),
in one run, with result checks and per-engine peak memory.

    python bench/tpch_bench.py [--sf 1] [--repeat 3] [--queries 1,3,5] [--results bench/RESULTS.md]

Data comes from `tpchgen-cli` (PyPI) as Parquet under `bench/.data/tpch-sf<SF>/`, and is loaded
once into an OmniLake warehouse beside it. Each engine runs in its own child process (so its
peak RSS is its own), every query `--repeat` times; the best time counts. Results of the three
engines are compared (numbers to 1e-6 relative); a mismatch is reported, never hidden.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tpch.queries import QUERIES, TABLES  # noqa: E402

ENGINES = ("omnilake", "omnilake-parquet", "datafusion", "duckdb")


def generate(data: Path, sf: float) -> None:
    if all((data / f"{t}.parquet").exists() for t in TABLES):
        return
    tool = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run([tool, "parquet", "-s", str(sf), f"--output-dir={data}"], check=True)


def load_warehouse(data: Path, warehouse: Path) -> float:
    """Load the Parquet files into OmniLake tables once; seconds spent (0 when loaded before)."""
    marker = warehouse / ".loaded"
    if marker.exists():
        return 0.0
    import pyarrow.parquet as pq

    import omnilake
    shutil.rmtree(warehouse, ignore_errors=True)
    start = time.perf_counter()
    with omnilake.connect(str(warehouse)) as conn:
        for table in TABLES:
            conn.insert(table, pq.read_table(data / f"{table}.parquet"), create=True)
        conn.flush()
    marker.write_text("ok\n")
    return time.perf_counter() - start


def _plain(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()[:10] if isinstance(value, dt.date) else value.isoformat()
    return value


def run_engine(engine: str, data: Path, warehouse: Path, queries: list[int], repeat: int) -> dict:
    if engine.startswith("omnilake"):
        import omnilake
        # omnilake-parquet: the column cache off, every run decodes Parquet
        conn = omnilake.connect(str(warehouse), **(
            {"column_cache_bytes": 0} if engine == "omnilake-parquet" else {}))

        def execute(sql):
            cur = conn.cursor()
            cur.execute(sql)
            return cur.fetchall()
    elif engine == "datafusion":
        from datafusion import SessionConfig, SessionContext
        ctx = SessionContext(SessionConfig().with_target_partitions(os.cpu_count() or 1))
        for table in TABLES:
            ctx.register_parquet(table, str(data / f"{table}.parquet"))

        def execute(sql):
            return [tuple(r.values()) for r in ctx.sql(sql).to_arrow_table().to_pylist()]
    else:
        import duckdb
        con = duckdb.connect()
        for table in TABLES:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data / f'{table}.parquet'}')")

        def execute(sql):
            return con.execute(sql).fetchall()
    out = {}
    for number in queries:
        best, first, rows, error = math.inf, None, None, None
        for _ in range(repeat):
            start = time.perf_counter()
            try:
                rows = execute(QUERIES[number])
            except Exception as exc:  # noqa: BLE001 - reported per query, the run goes on
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                break
            best = min(best, time.perf_counter() - start)
            first = first or best
        out[number] = {"seconds": None if error else best, "first": first, "error": error,
                       "rows": None if error else [[_plain(v) for v in r] for r in rows]}
        print(f"  {engine} q{number}: " + (error or f"{best * 1000:.0f} ms"), file=sys.stderr, flush=True)
    return {"queries": out, "peak_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM: reset at exec, unlike ru_maxrss, which a child
    inherits from the parent it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _same(a, b) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False

    def key(row):
        return [round(v, 2) if isinstance(v, float) else (v if v is not None else "") for v in row]
    for x, y in zip(sorted(a, key=lambda r: str(key(r))), sorted(b, key=lambda r: str(key(r)))):
        for u, v in zip(x, y):
            if isinstance(u, (int, float)) and isinstance(v, (int, float)):
                if not math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-6):
                    return False
            elif u != v:
                return False
    return True


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def report(results: dict, sf: float, repeat: int, load_seconds: float) -> str:
    import datafusion
    import duckdb
    import pyiceberg
    queries = sorted(int(q) for q in results["omnilake"]["queries"])
    lines = [f"## TPC-H SF{sf:g}: OmniLake vs DataFusion vs DuckDB", "",
             f"{dt.date.today()}, {platform.node()} ({os.cpu_count()} cores), Python "
             f"{platform.python_version()}, DataFusion {datafusion.__version__}, DuckDB {duckdb.__version__}, "
             f"pyiceberg {pyiceberg.__version__}; best of {repeat}; `python bench/tpch_bench.py --sf {sf:g}`. "
             "OmniLake reads Iceberg tables loaded from the same Parquet files the other two read. "
             + (f"Loading the warehouse took {load_seconds:.0f} s. " if load_seconds else ""),
             "",
             "OmniLake keeps decoded columns of files read more than once in memory (the column "
             "cache, on by default): *first* is each query's first run (from Parquet), *cache off* "
             "runs with `column_cache_bytes=0`.",
             "",
             "| query | OmniLake ms | first | cache off | DataFusion ms | DuckDB ms | vs DataFusion "
             "| vs DuckDB | cache off vs DuckDB | results agree |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    ratios = {"df": [], "dd": [], "off": []}
    for q in queries:
        o, p, d, k = (results[e]["queries"][str(q)] for e in ENGINES)

        def ms(r, key="seconds"):
            return f"{r[key] * 1000:,.0f}" if r.get(key) is not None else "error"

        def ratio(name, a, b):
            if not (a["seconds"] and b["seconds"]):
                return "-"
            ratios[name].append(a["seconds"] / b["seconds"])
            return f"{ratios[name][-1]:.2f}x"
        cells = [ms(o), ms(o, "first"), ms(p), ms(d), ms(k),
                 ratio("df", o, d), ratio("dd", o, k), ratio("off", p, k)]
        agree = "yes" if all(_same(r["rows"], k["rows"]) for r in (o, p, d)) else \
            ("OmniLake differs" if _same(d["rows"], k["rows"]) else "NO")
        lines.append(f"| q{q} | " + " | ".join(cells) + f" | {agree} |")
    lines.append(f"| **geomean** | | | | | | **{_geomean(ratios['df']):.2f}x** | "
                 f"**{_geomean(ratios['dd']):.2f}x** | **{_geomean(ratios['off']):.2f}x** | |")
    lines.append("")
    lines.append("Peak RSS per engine process: " + ", ".join(
        f"{e} {results[e]['peak_mb']:,.0f} MB" for e in ENGINES) + ".")
    errors = [f"{e} q{q}: {r['error']}" for e in ENGINES for q, r in results[e]["queries"].items()
              if r["error"]]
    if errors:
        lines += ["", "Errors: " + "; ".join(errors)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sf", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queries", default=",".join(map(str, QUERIES)))
    parser.add_argument("--data-dir", default=str(HERE / ".data"))
    parser.add_argument("--results", default=None, help="write a section into this RESULTS.md")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = Path(args.data_dir) / f"tpch-sf{args.sf:g}"
    warehouse = Path(args.data_dir) / f"tpch-sf{args.sf:g}-warehouse"
    queries = [int(q) for q in args.queries.split(",")]
    if args.engine:
        Path(args.json).write_text(json.dumps(run_engine(args.engine, data, warehouse, queries, args.repeat)))
        return 0
    generate(data, args.sf)
    load_seconds = load_warehouse(data, warehouse)
    results = {}
    for engine in ENGINES:
        out = Path(args.data_dir) / f"tpch-{engine}.json"
        subprocess.run([sys.executable, __file__, "--engine", engine, "--json", str(out), "--sf", str(args.sf),
                        "--repeat", str(args.repeat), "--queries", args.queries, "--data-dir", args.data_dir],
                       check=True)
        results[engine] = json.loads(out.read_text())
    text = report(results, args.sf, args.repeat, load_seconds)
    print(text)
    if args.results:
        from results import write_section
        write_section(args.results, f"tpch-sf{args.sf:g}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
