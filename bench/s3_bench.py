"""Object-storage benchmark: the same table and queries on a local folder and on S3.

A fact table is written through OmniLake into a local-folder warehouse and into an S3
warehouse (`s3://<bucket>/bench`), then each query runs on both, best of `--repeat` after one
warm-up. S3 is a `moto_server` on loopback started here (pip install 'moto[server]'), or the
endpoint in AWS_ENDPOINT_URL with `--bucket` when given. moto is a single Python process: its
numbers measure OmniLake's S3 path against a slow local server, not AWS S3. S3 is measured
without the read cache (`cache_size=0`) and with it warm.

Usage: python bench/s3_bench.py [--rows 2000000] [--repeat 3] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pyarrow as pa

import omnilake

QUERIES = {
    "count": "SELECT count(*) FROM facts",
    "full_scan_sum": "SELECT sum(amount), sum(qty), count(DISTINCT category) FROM facts",
    "group_by": "SELECT category, count(*), sum(amount) FROM facts GROUP BY category ORDER BY category",
    "selective": "SELECT id, amount FROM facts WHERE id BETWEEN 1000 AND 1099 ORDER BY id",
}


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
            return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto_server did not start (pip install 'moto[server]')")


def build(conn, rows: int) -> float:
    rng = np.random.default_rng(1)
    conn.sql("CREATE TABLE facts (id BIGINT, category TEXT, amount DOUBLE PRECISION, qty INT)")
    chunk = 500_000
    t0 = time.perf_counter()
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        conn.insert("facts", pa.table({
            "id": np.arange(start, start + n, dtype=np.int64),
            "category": pa.array(rng.choice([f"c{i}" for i in range(20)], n)),
            "amount": rng.gamma(2.0, 50.0, n),
            "qty": pa.array(rng.integers(1, 50, n), pa.int32())}))
        conn.flush("facts")  # one data file per chunk
    return time.perf_counter() - t0


def data_bytes(conn) -> int:
    table = conn.session.engine.warehouse.catalog.load_table(("public", "facts"))
    return sum(t.file.file_size_in_bytes for t in table.scan().plan_files())


def _rounded(rows: list[tuple]) -> list[tuple]:
    """Float sums differ in the last bits with the order DataFusion's partitions add them."""
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def timed(conn, sql: str, repeat: int) -> float:
    conn.sql(sql).fetchall()  # warm-up: plan cache, footers
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn.sql(sql).fetchall()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def run(rows: int, repeat: int, bucket: str | None) -> tuple[dict, dict, int, float, float]:
    moto = None
    settings: dict = {}
    if bucket is None:
        moto, endpoint = start_moto()
        settings = {"s3_endpoint": endpoint, "s3_access_key_id": "bench",
                    "s3_secret_access_key": "bench", "s3_region": "us-east-1"}
        import pyarrow.fs as pafs
        pafs.S3FileSystem(endpoint_override=endpoint, access_key="bench", secret_key="bench",
                          region="us-east-1", allow_bucket_creation=True).create_dir("bench")
        bucket = "bench"
    try:
        local = omnilake.connect(tempfile.mkdtemp(prefix="omnilake-bench-local-"))
        location = f"s3://{bucket}/bench-{os.getpid()}"
        state = tempfile.mkdtemp(prefix="omnilake-bench-state-")
        remote = omnilake.connect(location, local_dir=state, cache_size=0, **settings)
        load_local = build(local, rows)
        load_s3 = build(remote, rows)
        size = data_bytes(local)
        print(f"loaded {rows:,} rows: local {load_local:.1f} s, S3 {load_s3:.1f} s; "
              f"{size / 1e6:.1f} MB of Parquet", file=sys.stderr)
        remote.close()
        remote = omnilake.connect(location, local_dir=state, cache_size=0, **settings)
        cached = omnilake.connect(location, local_dir=state, cache_size=4 * size,
                                  cache_dir=tempfile.mkdtemp(prefix="omnilake-bench-cache-"),
                                  **settings)
        results_local, results_s3, results_cached = {}, {}, {}
        for label, sql in QUERIES.items():
            mine, theirs = local.sql(sql).fetchall(), remote.sql(sql).fetchall()
            assert _rounded(mine) == _rounded(theirs), (label, mine, theirs)
            results_local[label] = timed(local, sql, repeat)
            results_s3[label] = timed(remote, sql, repeat)
            results_cached[label] = timed(cached, sql, repeat)
            print(f"{label:14} local {results_local[label]:8.1f} ms   S3 {results_s3[label]:8.1f} "
                  f"ms   S3 warm cache {results_cached[label]:8.1f} ms", file=sys.stderr)
        local.close()
        remote.close()
        cached.close()
        return results_local, results_s3, results_cached, size, load_local, load_s3
    finally:
        if moto is not None:
            moto.kill()


def report(rows, repeat, local, s3, cached, size, load_local, load_s3) -> str:
    lines = [
        "## Object storage: scans on S3 (moto_server on loopback) vs a local folder",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()}: `python bench/s3_bench.py --rows {rows} "
        f"--repeat {repeat}`. One table of {rows:,} rows ({size / 1e6:.1f} MB of zstd Parquet "
        f"in {-(-rows // 500_000)} files) written through OmniLake to each warehouse; best of "
        f"{repeat} after one warm-up. Loading took {load_local:.1f} s locally and "
        f"{load_s3:.1f} s to S3.",
        "",
        "| query | local ms | S3, no cache ms | S3, warm cache ms | S3 no cache / local | "
        "S3 warm / local | S3 no cache MB/s (table bytes / time) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in local:
        mbs = size / 1e6 / (s3[label] / 1000)
        lines.append(f"| {label} | {local[label]:.1f} | {s3[label]:.1f} | {cached[label]:.1f} | "
                     f"{s3[label] / local[label]:.2f} | {cached[label] / local[label]:.2f} | "
                     f"{mbs:.0f} |")
    lines += ["", "Reading the numbers: the S3 server is moto, one Python process sharing the "
              "same CPUs with the client, so the S3 column includes moto's own cost per request; "
              "it says what OmniLake's S3 path costs against a loopback server, not what AWS S3 "
              "or MinIO would give. \"No cache\" (`cache_size=0`) reads the objects on every "
              "scan (DataFusion's object store, ranged GETs); \"warm cache\" reads local copies "
              "made by the warm-up run (the first, cold run downloads whole objects)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bucket", default=None,
                        help="an existing bucket on the AWS_* endpoint instead of moto")
    parser.add_argument("--results", default=None, help="write the table into this Markdown file")
    args = parser.parse_args()
    local, s3, cached, size, load_local, load_s3 = run(args.rows, args.repeat, args.bucket)
    text = report(args.rows, args.repeat, local, s3, cached, size, load_local, load_s3)
    print(text)
    if args.results:
        from results import write_section
        write_section(args.results, "s3", text)


if __name__ == "__main__":
    main()
