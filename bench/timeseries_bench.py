"""TSBS-style devops workload: ingest through line protocol (HTTP) and Arrow, then the TSBS
query kinds against DuckDB on the same rows in the same run.

The `cpu` measurement of TSBS: N hosts (tags hostname, region, datacenter), 10 usage_*
fields, one reading per host every 10 s. Line protocol goes over a real socket to the
InfluxDB-compatible endpoint (server/http_ingest.py) in batches of 10,000 lines from client
processes (`--clients`, default 1; a warm-up batch first, then the table is dropped);
Arrow goes through conn.insert in 10,000-row batches. Both with durability=fsync. Queries run
on the table loaded through line protocol after a flush (DuckDB: the same rows in an
in-memory table), best of 5 after one warm-up, and their results are compared.

`--server-cores N` pins the server (this process, every thread) to N cores and the client
processes to the others while line protocol is posted, as TSBS runs its loader on a machine of
its own: rows/s per core is then the server's rows/s over N. Without it, per core divides by
all cores, which the clients share. The Arrow ingest and the queries use every core either way.

Usage: python bench/timeseries_bench.py [--hosts 100] [--hours 6] [--results bench/RESULTS.md]
       python bench/timeseries_bench.py --ingest-only ...   (the ingest rates, no queries)
       python bench/timeseries_bench.py --server-cores 1 --ingest-only ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
import urllib.request

import duckdb
import numpy as np
import pyarrow as pa

import omnilake
from omnilake.server.http_ingest import start_in_thread
from omnilake.server.line_protocol import parse

METRICS = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait",
           "usage_irq", "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"]
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
STEP_S = 10
BATCH = 10_000


def make_data(hosts: int, hours: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    steps = hours * 3600 // STEP_S
    n = hosts * steps
    times = (np.repeat(np.arange(steps, dtype=np.int64) * STEP_S * 1_000_000, hosts)
             + int(START.timestamp() * 1_000_000))
    host_ids = np.tile(np.arange(hosts), steps)
    regions = np.array(["us-east-1", "us-west-1", "eu-west-1", "ap-south-1"])
    columns = {
        "time": pa.array(times, pa.timestamp("us", "UTC")),
        "hostname": pa.array([f"host_{i}" for i in host_ids], pa.string()),
        "region": pa.array(regions[host_ids % 4], pa.string()),
        "datacenter": pa.array([f"dc{i % 7}" for i in host_ids], pa.string()),
    }
    for metric in METRICS:
        columns[metric] = np.round(rng.uniform(0, 100, n), 2)
    return pa.table(columns)


def line_protocol(data: pa.Table) -> list[bytes]:
    """Bodies of BATCH lines each, precision ns, as TSBS writes them."""
    cols = data.to_pydict()
    ns = [int(t.timestamp()) * 10**9 for t in cols["time"]]
    lines = [
        f"cpu,hostname={h},region={r},datacenter={d} " +
        ",".join(f"{m}={cols[m][i]}" for m in METRICS) + f" {ns[i]}"
        for i, (h, r, d) in enumerate(zip(cols["hostname"], cols["region"], cols["datacenter"]))]
    return ["\n".join(lines[i:i + BATCH]).encode() for i in range(0, len(lines), BATCH)]


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.status == 204, response.status


def pin(cores: list[int]) -> None:
    """Pin every thread of this process to `cores` (threads started later inherit it)."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except ProcessLookupError:
            pass  # a thread that just ended


def post_all(url: str, path: str, start_at: float = 0.0) -> tuple[float, float]:
    """The load generator (run in its own process, as TSBS's loader is): posts the bodies
    pickled in `path`, starting at `start_at` (so that every client has read its bodies before
    any starts: handing 50 MB to one client would otherwise take CPU while the others post);
    (start, end) wall clock."""
    with open(path, "rb") as f:
        bodies = pickle.load(f)
    time.sleep(max(0.0, start_at - time.time()))
    start = time.time()
    for body in bodies:
        post(url, body)
    return start, time.time()


def queries(t0: dt.datetime, hours: int) -> dict[str, tuple[str, str]]:
    """TSBS query kinds: (OmniLake SQL, DuckDB SQL)."""
    one_hour = (t0 + dt.timedelta(hours=min(hours, 3) - 1)).isoformat()
    one_hour_end = (t0 + dt.timedelta(hours=min(hours, 3))).isoformat()
    end = (t0 + dt.timedelta(hours=hours)).isoformat()
    start = t0.isoformat()
    single = ("SELECT time_bucket('1 minute', time) AS minute, max(usage_user) AS m FROM cpu "
              f"WHERE hostname = 'host_7' AND time >= '{one_hour}' AND time < '{one_hour_end}' "
              "GROUP BY 1 ORDER BY 1")
    double = ("SELECT time_bucket('1 hour', time) AS hour, hostname, avg(usage_user) AS m "
              f"FROM cpu WHERE time >= '{start}' AND time < '{end}' GROUP BY 1, 2 ORDER BY 1, 2")
    high = ("SELECT time, hostname, usage_user FROM cpu WHERE hostname = 'host_3' AND "
            f"usage_user > 90.0 AND time >= '{start}' AND time < '{end}' ORDER BY time")
    orderby = ("SELECT time_bucket('1 minute', time) AS minute, max(usage_user) AS m FROM cpu "
               f"WHERE time < '{end}' GROUP BY 1 ORDER BY 1 DESC LIMIT 5")
    return {
        "single-groupby-1-1-1": (single, single),
        "double-groupby-1": (double, double),
        "lastpoint": ("SELECT hostname, max(time) AS t, last(usage_user, time) AS u FROM cpu "
                      "GROUP BY hostname ORDER BY hostname",
                      "SELECT hostname, max(time) AS t, arg_max(usage_user, time) AS u FROM cpu "
                      "GROUP BY hostname ORDER BY hostname"),
        "high-cpu-1": (high, high),
        "groupby-orderby-limit": (orderby, orderby),
    }


def best(fn, runs: int = 5) -> tuple[float, object]:
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000, result


def same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            if isinstance(u, float) or isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif isinstance(u, dt.datetime):
                if u.astimezone(dt.timezone.utc) != v.astimezone(dt.timezone.utc):
                    return False
            elif u != v:
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--clients", type=int, default=1,
                        help="load-generating processes posting line protocol")
    parser.add_argument("--results", default=None)
    parser.add_argument("--server-cores", type=int, default=None,
                        help="pin the server to this many cores, the clients to the others")
    parser.add_argument("--ingest-only", action="store_true",
                        help="measure the ingest paths only (no queries, no RESULTS.md)")
    args = parser.parse_args()
    if args.ingest_only and args.results:
        parser.error("--results needs the queries: drop --ingest-only")
    cores = client_cores = None  # pinned only with --server-cores (Linux)
    args.cores = os.cpu_count() or 1
    if args.server_cores is not None:
        cores = sorted(os.sched_getaffinity(0))
        if not 0 < args.server_cores < len(cores):
            parser.error(f"--server-cores must leave the clients a core (this machine has {len(cores)})")
        client_cores = cores[args.server_cores:]
        pin(cores[:args.server_cores])
        args.cores = args.server_cores
    data = make_data(args.hosts, args.hours)
    rows = data.num_rows
    bodies = line_protocol(data)
    body_mb = sum(len(b) for b in bodies) / 1e6
    print(f"{rows:,} rows, {len(bodies)} line-protocol bodies, {body_mb:.1f} MB", file=sys.stderr)

    t0 = time.perf_counter()
    parsed = sum(parse(b, "ns").lines for b in bodies)
    parse_rate = parsed / (time.perf_counter() - t0)

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="ol-tsbs-") as warehouse, \
            omnilake.connect(warehouse, durability="fsync", timeseries_interval=0) as conn:
        server = start_in_thread(conn.session.engine, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.port}/write?precision=ns"
        from concurrent.futures import ProcessPoolExecutor
        clients = max(1, args.clients)
        folder = tempfile.mkdtemp(prefix="ol-tsbs-bodies-")
        paths = [os.path.join(folder, f"client{i}.pickle") for i in range(clients + 1)]
        for path, part in zip(paths, [bodies[:1]] + [bodies[i::clients] for i in range(clients)]):
            with open(path, "wb") as f:
                pickle.dump(part, f)
        with ProcessPoolExecutor(clients, initializer=pin if cores else None,
                                 initargs=(client_cores,) if cores else ()) as pool:
            pool.submit(post_all, url, paths[0]).result()  # the client processes start
            conn.sql("DROP TABLE cpu")
            start_at = time.time() + 2.0
            cpu = time.process_time()  # this process: the server's threads (clients are apart)
            futures = [pool.submit(post_all, url, path, start_at) for path in paths[1:]]
            spans = [future.result() for future in futures]
            out["lp"] = rows / (max(e for _, e in spans) - min(s for s, _ in spans))
            out["lp_server_cpu_s"] = time.process_time() - cpu
        shutil.rmtree(folder, ignore_errors=True)
        server.close()
        if cores:
            pin(cores)  # the rest (Arrow ingest, queries) on every core, as without --server-cores
        writer = conn.session.engine.writer
        out["lp_flush_rows"] = sum(t.num_rows for t in writer.memtable.rows("public.cpu"))
        t0 = time.perf_counter()
        conn.flush()
        out["lp_flush_s"] = time.perf_counter() - t0

        conn.sql("CREATE TABLE cpu_arrow (time TIMESTAMPTZ NOT NULL, hostname TEXT, region TEXT, "
                 "datacenter TEXT, " + ", ".join(f"{m} DOUBLE PRECISION" for m in METRICS) +
                 ") WITH (time_column = 'time', tags = 'hostname, region, datacenter', "
                 "partition = 'day')")
        t0 = time.perf_counter()
        for i in range(0, rows, BATCH):
            conn.insert("cpu_arrow", data.slice(i, BATCH))
        out["arrow"] = rows / (time.perf_counter() - t0)
        conn.flush()
        assert conn.sql("SELECT count(*) FROM cpu").fetchall() == [(rows,)]
        files = len(list(conn.session.engine.warehouse.catalog.load_table("public.cpu")
                         .scan().plan_files()))
        if args.ingest_only:
            print(report(args, rows, body_mb, parse_rate, out, files, []))
            return

        duck = duckdb.connect()
        duck.execute("SET TimeZone = 'UTC'")
        duck.register("source", data)
        duck.execute("CREATE TABLE cpu AS SELECT * FROM source")
        results = []
        for name, (ours_sql, duck_sql) in queries(START, args.hours).items():
            ours_ms, ours_rows = best(lambda q=ours_sql: conn.sql(q).fetchall())
            duck_ms, duck_rows = best(lambda q=duck_sql: duck.execute(q).fetchall())
            results.append((name, ours_ms, duck_ms, len(ours_rows), same(ours_rows, duck_rows)))
            print(name, f"{ours_ms:.1f} ms vs {duck_ms:.1f} ms", results[-1][3:], file=sys.stderr)

    text = report(args, rows, body_mb, parse_rate, out, files, results)
    print(text)
    if args.results:
        sys.path.insert(0, os.path.dirname(__file__))
        from results import write_section
        write_section(args.results, f"timeseries-{args.hosts}-hosts", text)  # one per scale


def report(args, rows, body_mb, parse_rate, out, files, results) -> str:
    cores, machine_cores = args.cores, os.cpu_count() or 1
    pinned = (f" --server-cores {args.server_cores}" if args.server_cores else "")
    lines = [
        f"## Time series: TSBS-style devops cpu ({dt.date.today()})", "",
        f"{args.hosts} hosts x {args.hours} h at 10 s = {rows:,} rows (3 tags, 10 float "
        f"fields; {body_mb:.1f} MB of line protocol); {machine_cores} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}; durability=fsync. "
        "The machine was shared with other engineers' test runs while this ran: expect noise. "
        "Command: `python bench/timeseries_bench.py "
        f"--hosts {args.hosts} --hours {args.hours} --clients {args.clients}{pinned}`.", "",
        "| ingest path | rows/s | rows/s per core |", "|---|---:|---:|",
        f"| line protocol over HTTP (`/write`, 10k-line batches, {args.clients} client "
        f"process(es){'; server pinned to %d core(s)' % cores if args.server_cores else ''}) "
        f"| {out['lp']:,.0f} | "
        f"{out['lp'] / cores:,.0f} |",
        f"| line-protocol parser alone (no HTTP, no write; one thread) | {parse_rate:,.0f} | "
        f"{parse_rate:,.0f} |",
        f"| Arrow (`conn.insert`, 10k-row batches) | {out['arrow']:,.0f} | "
        f"{out['arrow'] / machine_cores:,.0f} |", "",
        f"The server's own CPU time over the line-protocol run was {out['lp_server_cpu_s']:.2f} s: "
        f"{rows / out['lp_server_cpu_s']:,.0f} rows per CPU-second. " + (
            f"The server was pinned to {cores} core(s) and the client processes to the other "
            f"{machine_cores - cores}: per core above is the server's rows/s over {cores}."
            if args.server_cores else
            f"Per core above divides by all {cores} cores, which the client processes share."),
        "",
    ]
    if not results:  # --ingest-only
        lines.append(f"Flushing the {out['lp_flush_rows']:,} line-protocol rows still pending "
                     f"afterwards took {out['lp_flush_s']:.2f} s ({files} data files in all).")
        return "\n".join(lines) + "\n"
    lines += [
        f"Flushing the line-protocol rows to Iceberg afterwards took {out['lp_flush_s']:.2f} s "
        f"({files} data files: day partitions). COPY is not measured (it comes with the wire "
        "server).", "",
        "Queries on the table loaded through line protocol, DuckDB on the same rows in an "
        "in-memory table; best of 5 after a warm-up; `same` = identical results:", "",
        "| query | OmniLake ms | DuckDB ms | OmniLake / DuckDB | rows | same |",
        "|---|---:|---:|---:|---:|---|",
    ]
    ratios = []
    for name, ours, duck, count, same_rows in results:
        ratios.append(ours / duck)
        lines.append(f"| {name} | {ours:.1f} | {duck:.1f} | {ours / duck:.2f} | {count} | "
                     f"{'yes' if same_rows else 'NO'} |")
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    lines.append(f"| **geometric mean** | | | **{geo:.2f}** | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
