"""InfluxDB-compatible HTTP ingest over a real socket: /write, /api/v2/write, gzip, chunked,
tables and columns created on first write, schema evolution, all-or-nothing batches."""

import gzip
import http.client
import json
import threading
import urllib.error
import urllib.request

import pytest

import omnilake
from omnilake.server.http_ingest import start_in_thread


@pytest.fixture
def ingest(warehouse):
    conn = omnilake.connect(warehouse)
    server = start_in_thread(conn.session.engine, "127.0.0.1", 0)
    yield conn, f"http://127.0.0.1:{server.port}"
    server.close()
    conn.close()


def post(url, body: bytes, headers=None):
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_v1_write_creates_a_time_series_table(ingest):
    conn, base = ingest
    body = b"cpu,host=a,region=eu usage=1.5,n=3i 1700000000000000000\ncpu,host=b usage=2 1700000001000000000\n"
    assert post(f"{base}/write?precision=ns", body) == (204, b"")
    assert conn.sql("SELECT time, host, region, usage, n FROM cpu ORDER BY host").fetchall()[0][1:] == \
        ("a", "eu", 1.5, 3)
    table = conn.session.engine.warehouse.catalog.load_table("public.cpu")
    assert json.loads(table.properties["omnilake.timeseries"])["time_column"] == 1
    assert [str(f.transform) for f in table.spec().fields] == ["day"]
    types = dict(conn.sql("SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'cpu'").fetchall())
    assert types == {"time": "timestamp with time zone", "host": "text", "region": "text",
                     "usage": "double precision", "n": "bigint"}


def test_v2_write_gzip_precision_bucket_and_new_fields_evolve_the_schema(ingest):
    conn, base = ingest
    first = gzip.compress(b"mem,host=a used=10i 1700000000\n")
    status, _ = post(f"{base}/api/v2/write?bucket=telegraf&org=x&precision=s", first,
                     {"Content-Encoding": "gzip"})
    assert status == 204
    second = b"mem,host=a,dc=x used=11i,free=0.5,ok=true,note=\"n\" 1700000001000\n"
    assert post(f"{base}/api/v2/write?bucket=telegraf&precision=ms", second)[0] == 204
    got = conn.sql("SELECT extract(epoch FROM time), host, dc, used, free, ok, note "
                   "FROM telegraf.mem ORDER BY time").fetchall()
    assert [tuple(r[1:]) for r in got] == [("a", None, 10, None, None, None),
                                          ("a", "x", 11, 0.5, True, "n")]
    assert [int(r[0]) for r in got] == [1700000000, 1700000001]
    table = conn.session.engine.warehouse.catalog.load_table("telegraf.mem")
    assert json.loads(table.properties["omnilake.timeseries"])["tags"] == [2, 4]  # host, dc
    assert [f.source_id for f in table.sort_order().fields] == [2, 4, 1]


def test_bad_line_reports_its_number_and_writes_nothing(ingest):
    conn, base = ingest
    assert post(f"{base}/write", b"cpu,host=a usage=1 1\n")[0] == 204
    body = b"cpu,host=a usage=2 2\nmem,host=a free=1i 2\ncpu,host=b usage=oops 3\n"
    status, payload = post(f"{base}/write", body)
    assert status == 400 and json.loads(payload)["error"].startswith("line 3:")
    status, payload = post(f"{base}/api/v2/write", body)
    assert status == 400 and json.loads(payload)["code"] == "invalid"
    assert "line 3" in json.loads(payload)["message"]
    assert conn.sql("SELECT usage FROM cpu").fetchall() == [(1.0,)]
    assert conn.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'mem'") \
        .fetchall() == [(0,)]


def test_type_conflict_with_an_existing_column_writes_nothing(ingest):
    conn, base = ingest
    assert post(f"{base}/write", b"m,h=a v=1i 1\n")[0] == 204
    status, payload = post(f"{base}/write", b"m,h=a v=2i 2\nm,h=a v=\"text\" 3\n")
    assert status == 400  # inside one batch
    status, payload = post(f"{base}/write", b"other v=1 1\nm,h=a v=\"text\" 3\n")
    assert status == 400 and "field type conflict" in json.loads(payload)["error"]
    assert conn.sql("SELECT v FROM m").fetchall() == [(1,)]
    assert conn.sql("SELECT count(*) FROM other").fetchall() == [(0,)]  # created, no rows


def test_chunked_keep_alive_ping_query_and_errors(ingest):
    conn, base = ingest
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", "/ping")
    response = connection.getresponse()
    assert response.status == 204 and response.read() == b""
    lines = (f"t,h=h{i} v={i}i {i}\n".encode() for i in range(100))
    connection.request("POST", "/write?precision=s", body=lines,
                       headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 204 and response.read() == b""
    connection.request("POST", "/query", body=b"q=CREATE DATABASE telegraf")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["results"]
    connection.request("GET", "/write")
    response = connection.getresponse()
    assert response.status == 405
    response.read()
    connection.request("POST", "/nope", body=b"")
    response = connection.getresponse()
    assert response.status == 404
    response.read()
    connection.close()
    assert conn.sql("SELECT count(*), sum(v) FROM t").fetchall() == [(100, sum(range(100)))]
    assert post(f"{base}/api/v2/write?precision=h", b"t v=1i 1")[0] == 400
    assert post(f"{base}/write", b"not gzip", {"Content-Encoding": "gzip"})[0] == 400
    assert post(f"{base}/write", b"t v=1i", {"Content-Encoding": "br"})[0] == 415


def test_writes_are_durable_and_visible_after_reopen(warehouse):
    conn = omnilake.connect(warehouse)
    server = start_in_thread(conn.session.engine, "127.0.0.1", 0)
    body = "\n".join(f"sensor,id=s{i % 7} temp={20 + i / 10} {1700000000 + i}"
                     for i in range(500)).encode()
    assert post(f"http://127.0.0.1:{server.port}/write?precision=s", body)[0] == 204
    server.close()
    conn.close()
    with omnilake.connect(warehouse) as again:
        assert again.sql("SELECT count(*), count(DISTINCT id) FROM sensor").fetchall() == [(500, 7)]


def test_expect_100_continue_over_a_raw_socket(ingest):
    import socket
    conn, base = ingest
    host, port = base.removeprefix("http://").split(":")
    body = b"raw,h=a v=1i 1\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /api/v2/write?precision=s HTTP/1.1\r\nHost: x\r\n"
                     b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(1024):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 204")
    assert conn.sql("SELECT v FROM raw").fetchall() == [(1,)]


def test_acknowledged_batches_survive_a_killed_process(warehouse):
    """204 means durable: the server process is SIGKILLed right after the reply, and a new
    process recovers every acknowledged batch from the write-ahead log."""
    import os
    import signal
    import subprocess
    import sys
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, omnilake\n"
         "from omnilake.server.http_ingest import start_in_thread\n"
         f"conn = omnilake.connect({warehouse!r}, flush_interval=3600)\n"
         "server = start_in_thread(conn.session.engine)\n"
         "print(server.port, flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
        cwd=os.path.expanduser("~"))  # not the checkout: its omnilake/ would shadow the install
    try:
        port = int(child.stdout.readline())
        for batch in range(3):
            body = "\n".join(f"crash,h=h{i % 3} v={batch * 100 + i}i {batch * 100 + i}"
                             for i in range(100)).encode()
            assert post(f"http://127.0.0.1:{port}/write?precision=s", body)[0] == 204
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT count(*), sum(v) FROM crash").fetchall() == [(300, sum(range(300)))]


def test_writes_into_a_declared_time_series_table_and_refuses_plain_ones(ingest):
    conn, base = ingest
    conn.sql("CREATE TABLE weather (ts TIMESTAMPTZ NOT NULL, city TEXT, temp REAL) "
             "WITH (time_column = 'ts', tags = 'city', partition = 'month', retention = '3650 days')")
    assert post(f"{base}/write?precision=s", b"weather,city=Oslo temp=-3.5 1700000000\n")[0] == 204
    assert conn.sql("SELECT extract(epoch FROM ts), city, temp FROM weather").fetchall() == \
        [(1700000000, "Oslo", -3.5)]
    conn.sql("CREATE TABLE plain (a INT)")
    status, payload = post(f"{base}/write", b"plain a=1i 1\n")
    assert status == 400 and 'no column "time"' in json.loads(payload)["error"]
    status, payload = post(f"{base}/write", b"weather,city=Oslo temp=true 1\n")
    assert status == 400 and "field type conflict" in json.loads(payload)["error"]
    assert conn.sql("SELECT count(*) FROM weather").fetchall() == [(1,)]


def test_concurrent_clients_creating_and_evolving_the_same_tables(ingest):
    from concurrent.futures import ThreadPoolExecutor
    conn, base = ingest

    def client(n):
        body = "\n".join(f"shared,c=c{n} f{n}={i}i,common={i} {n * 1000 + i}"
                         for i in range(50)).encode()
        return post(f"{base}/write?precision=s", body)[0]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(client, range(8))) == [204] * 8
    assert conn.sql("SELECT count(*), count(DISTINCT c), sum(common) FROM shared").fetchall() == \
        [(400, 8, 8 * sum(range(50)))]
    columns = {r[0] for r in conn.sql("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'shared'").fetchall()}
    assert columns == {"time", "c", "common", *(f"f{n}" for n in range(8))}


def test_a_due_flush_runs_after_the_reply_and_writers_wait_when_it_falls_behind(warehouse):
    """A batch that makes its table due for a flush is answered while the flusher thread
    writes the files; a table pending three times its thresholds is flushed by the writer
    itself, after the flush already running (backpressure)."""
    conn = omnilake.connect(warehouse, flush_rows=5, flush_interval=3600)
    writer = conn.session.engine.writer
    started, release = threading.Event(), threading.Event()
    commit = writer._commit

    def held_commit(*args, **kwargs):
        started.set()
        release.wait(30)
        return commit(*args, **kwargs)
    writer._commit = held_commit
    server = start_in_thread(conn.session.engine, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/write"
    try:
        lines = [f"m,host=h{i} v={i} {1_700_000_000_000_000_000 + i}".encode() for i in range(18)]
        assert post(url, b"\n".join(lines[:6])) == (204, b"")  # answered, flush still held
        assert started.wait(10)
        assert conn.sql("SELECT count(*) FROM m").fetchall() == [(6,)]
        second = threading.Thread(target=lambda: post(url, b"\n".join(lines[6:])))
        second.start()  # 18 pending >= 3 x 5: its writer flushes, after the held flush
        second.join(0.5)
        assert second.is_alive()
        release.set()
        second.join(30)
        assert not second.is_alive()
        assert writer.memtable.stats("public.m") is None  # all 18 rows committed
        assert conn.sql("SELECT count(*), sum(v) FROM m").fetchall() == [(18, sum(range(18)))]
    finally:
        release.set()
        server.close()
        conn.close()
