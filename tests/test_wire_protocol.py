"""The wire server under bad input, many clients, cancels, authentication and shutdown:
raw sockets for what no client library would send."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

import omnilake  # noqa: E402
from wire_messages import (columns, connect, error_code, message, parse,  # noqa: E402
                           read_messages, read_messages_from, rows, run_portal, startup)
from wire_server import start_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("wire") / "wh"))
    with psycopg.connect(srv.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE nums (n INT)")
        c.execute("INSERT INTO nums SELECT * FROM (VALUES " + ",".join(f"({i})" for i in range(600)) + ") v(n)")
    yield srv
    assert srv.stop() == 0


# About 2e9 row comparisons (a few seconds): a nested-loop join DataFusion cannot shortcut.
SLOW_QUERY = ("SELECT count(*) FROM nums a, nums b, nums c, (SELECT n FROM nums WHERE n < 8) d "
              "WHERE a.n < 600 AND a.n + b.n > c.n + d.n")


def _still_serving(server) -> None:
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM nums").fetchone() == (600,)


def test_startup_reports_parameters_and_key(server):
    sock = socket.create_connection((server.host, server.port), timeout=20)
    sock.sendall(startup())
    messages = read_messages(sock)
    status = dict(body[:-1].split(b"\0") for kind, body in messages if kind == b"S")
    assert status[b"server_version"].startswith(b"16.")
    assert status[b"standard_conforming_strings"] == b"on" and status[b"integer_datetimes"] == b"on"
    assert status[b"client_encoding"] == b"UTF8" and status[b"TimeZone"] == b"UTC"
    assert any(kind == b"K" for kind, _ in messages)
    assert messages[-1] == (b"Z", b"I")
    sock.close()


def test_ssl_and_gssenc_requests_are_declined_then_startup_works(server):
    sock = socket.create_connection((server.host, server.port), timeout=20)
    sock.sendall(struct.pack("!ii", 8, 80877103))
    assert sock.recv(1) == b"N"
    sock.sendall(struct.pack("!ii", 8, 80877104))
    assert sock.recv(1) == b"N"
    sock.sendall(startup())
    assert read_messages(sock)[-1][0] == b"Z"
    sock.close()


def test_simple_query_with_several_statements_and_empty_query(server):
    sock = connect(server)
    sock.sendall(message(b"Q", b"SELECT 1 AS a; SELECT 'x' AS b;\0"))
    messages = read_messages(sock)
    kinds = [k for k, _ in messages]
    assert kinds == [b"T", b"D", b"C", b"T", b"D", b"C", b"Z"]
    sock.sendall(message(b"Q", b"\0"))
    assert [k for k, _ in read_messages(sock)] == [b"I", b"Z"]
    sock.close()


@pytest.mark.parametrize("payload, reason", [
    (message(b"Y", b"whatever"), "unknown message type"),
    (b"Q" + struct.pack("!i", 2), "length smaller than itself"),
    (b"Q" + struct.pack("!i", 2_000_000_000), "oversized message"),
    (message(b"P", b"no-terminator"), "truncated Parse"),
    (message(b"B", b"\0\0" + struct.pack("!h", 5)), "truncated Bind"),
])
def test_broken_messages_get_an_error_or_a_close_and_others_keep_working(server, payload, reason):
    sock = connect(server)
    sock.sendall(payload)
    messages = read_messages(sock, until=b"E", limit=10)
    errors = [body for kind, body in messages if kind == b"E"]
    assert errors, f"{reason}: expected an ErrorResponse"
    assert error_code(errors[0]) in ("08P01", "XX000", "22021", "26000", "42601")
    sock.close()
    _still_serving(server)


def test_invalid_utf8_query_is_an_error_and_the_connection_survives(server):
    sock = connect(server)
    sock.sendall(message(b"Q", b"SELECT '\xff\xfe'\0"))
    messages = read_messages(sock)
    assert error_code([b for k, b in messages if k == b"E"][0]) == "22021"
    sock.sendall(message(b"Q", b"SELECT 1\0"))
    assert [k for k, _ in read_messages(sock)] == [b"T", b"D", b"C", b"Z"]
    sock.close()


def test_extended_protocol_error_skips_to_sync(server):
    sock = connect(server)
    sock.sendall(message(b"P", b"\0SELECT (\0\0\0") + message(b"B", b"\0\0\0\0\0\0\0\0")
                 + message(b"E", b"\0\0\0\0\0") + message(b"S", b""))
    kinds = [k for k, _ in read_messages(sock)]
    assert kinds == [b"E", b"Z"]
    sock.sendall(message(b"P", b"\0SELECT $1::int + 1\0\0\0")
                 + message(b"B", b"\0\0\0\0\0\1" + struct.pack("!i", 1) + b"4" + b"\0\0")
                 + message(b"D", b"P\0") + message(b"E", b"\0\0\0\0\0") + message(b"S", b""))
    messages = read_messages(sock)
    assert [k for k, _ in messages] == [b"1", b"2", b"T", b"D", b"C", b"Z"]
    assert messages[3][1].endswith(b"5")
    sock.close()


def test_row_limit_suspends_the_portal(server):
    sock = connect(server)
    sock.sendall(message(b"P", b"\0SELECT n FROM nums ORDER BY n LIMIT 5\0\0\0")
                 + message(b"B", b"\0\0\0\0\0\0\0\0") + message(b"E", b"\0" + struct.pack("!i", 2))
                 + message(b"E", b"\0" + struct.pack("!i", 2)) + message(b"E", b"\0" + struct.pack("!i", 2))
                 + message(b"S", b""))
    kinds = [k for k, _ in read_messages(sock)]
    assert kinds == [b"1", b"2", b"D", b"D", b"s", b"D", b"D", b"s", b"D", b"C", b"Z"]
    sock.close()


def test_client_vanishing_mid_query_does_not_hurt_the_server(server):
    for _ in range(3):
        sock = connect(server)
        sock.sendall(message(b"Q", b"SELECT count(*) FROM nums a, nums b, nums c WHERE a.n + b.n = c.n\0"))
        sock.close()
    _still_serving(server)


def test_cancel_request_stops_a_long_query(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        timer = threading.Timer(1.0, c.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute(SLOW_QUERY)
        timer.join()
        assert c.execute("SELECT 42").fetchone() == (42,)


def test_a_slow_query_never_stalls_other_connections(server):
    """A quick query on a second connection finishes while the slow one is still running."""
    order = []
    slow_done = threading.Event()

    def slow():
        with psycopg.connect(server.conninfo(), autocommit=True) as c:
            c.execute(SLOW_QUERY)
        order.append("slow")
        slow_done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        for _ in range(5):
            assert c.execute("SELECT 1").fetchone() == (1,)
    order.append("fast" if not slow_done.is_set() else "fast-after-slow")
    thread.join()
    assert order == ["fast", "slow"]


def test_64_concurrent_clients_without_errors(server):
    async def client(i: int, stop: float) -> int:
        c = await asyncpg.connect(server.dsn())
        done = 0
        try:
            while time.monotonic() < stop:
                if i % 4 == 0:
                    await c.execute("INSERT INTO nums VALUES ($1)", 10_000 + i)
                else:
                    assert await c.fetchval("SELECT n FROM nums WHERE n = $1", i) == i
                done += 1
        finally:
            await c.close()
        return done

    async def main():
        stop = time.monotonic() + 4
        return await asyncio.gather(*(client(i, stop) for i in range(64)))

    counts = asyncio.run(main())
    assert all(n > 0 for n in counts)
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        inserted = c.execute("SELECT count(*) FROM nums WHERE n >= 10000").fetchone()[0]
        assert inserted == sum(n for i, n in enumerate(counts) if i % 4 == 0)
        c.execute("DELETE FROM nums WHERE n >= 10000")


def test_scram_authentication(tmp_path):
    srv = start_server(str(tmp_path / "wh"))
    try:
        with psycopg.connect(srv.conninfo(), autocommit=True) as c:  # no users yet: trust
            c.execute("CREATE USER alice PASSWORD 'correct horse'")
            with pytest.raises(psycopg.errors.DuplicateObject):
                c.execute("CREATE USER alice PASSWORD 'x'")
        with psycopg.connect(srv.conninfo(user="alice", password="correct horse"), autocommit=True) as c:
            assert c.execute("SELECT current_user").fetchone() == ("alice",)
            c.execute("ALTER USER alice WITH PASSWORD 'battery staple'")
        for user, password in [("alice", "correct horse"), ("mallory", "guess"), ("alice", "BATTERY STAPLE")]:
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(srv.conninfo(user=user, password=password))

        async def with_asyncpg():
            c = await asyncpg.connect(srv.dsn("alice", "battery staple"))
            assert await c.fetchval("SELECT 1") == 1
            await c.close()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(srv.dsn("alice", "wrong"))
        asyncio.run(with_asyncpg())
        # the verifier is stored, never the password
        import sqlite3
        stored = sqlite3.connect(f"{tmp_path / 'wh'}/catalog.db").execute(
            "SELECT verifier FROM omnilake_users").fetchall()
        assert stored[0][0].startswith("SCRAM-SHA-256$") and "battery" not in stored[0][0]
    finally:
        assert srv.stop() == 0


def test_non_loopback_without_users_refuses_to_start(tmp_path):
    done = subprocess.run([sys.executable, "-m", "omnilake", "serve", "-w", str(tmp_path / "wh"),
                           "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=120,
                          cwd=os.path.expanduser("~"))
    assert done.returncode == 1
    assert "CREATE USER" in done.stderr and "28000" in done.stderr


def test_sigterm_flushes_acknowledged_rows(tmp_path):
    srv = start_server(str(tmp_path / "wh"), "--flush-interval", "3600")
    with psycopg.connect(srv.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE pending (n INT)")
        c.execute("INSERT INTO pending VALUES (1), (2), (3)")
    assert srv.stop() == 0
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        table = conn.session.engine.warehouse.catalog.load_table(("public", "pending"))
        assert table.scan().to_arrow().num_rows == 3  # in Iceberg, not only in the log


@pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0,
                    reason="openssl not installed")
def test_tls_when_a_certificate_is_given(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"), "-days", "1",
                    "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    srv = start_server(str(tmp_path / "wh"), "--tls-cert", str(tmp_path / "cert.pem"),
                       "--tls-key", str(tmp_path / "key.pem"))
    try:
        with psycopg.connect(srv.conninfo(sslmode="require"), autocommit=True) as c:
            assert c.pgconn.ssl_in_use
            assert c.execute("SELECT 1").fetchone() == (1,)
        with psycopg.connect(srv.conninfo(sslmode="disable"), autocommit=True) as c:
            assert not c.pgconn.ssl_in_use  # TLS is offered, not forced
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("packet, code", [
    (struct.pack("!ii", 8, 131072), "0A000"),                           # protocol 2.0
    (struct.pack("!ii", 4_000_000, 196608), "08P01"),                  # absurd startup length
    (startup().replace(b"omnilake", b"nosuchdb"), "3D000"),           # unknown database
    (struct.pack("!ii", 17, 196608) + b"user\0x\0\0\xff", "08P01"),     # garbage after the end
])
def test_bad_startup_packets_are_refused_with_a_code(server, packet, code):
    sock = socket.create_connection((server.host, server.port), timeout=20)
    sock.sendall(packet)
    messages = read_messages(sock, until=b"E", limit=10)
    assert messages and messages[-1][0] == b"E" and error_code(messages[-1][1]) == code
    sock.close()
    _still_serving(server)


def test_set_reports_changed_parameters(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("SET application_name = 'reporter'")
        assert c.info.parameter_status("application_name") == "reporter"
        c.execute("RESET application_name")
        assert c.info.parameter_status("application_name") == ""
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("SET TIME ZONE 'Europe/Paris'")
        assert c.execute("SHOW timezone").fetchone() == ("UTC",)


def test_serve_with_http_line_protocol_ingest(tmp_path):
    import urllib.request
    srv = start_server(str(tmp_path / "wh"), "--http-port", "0")
    try:
        assert srv.http_port
        body = b"weather,city=paris temp=21.5,hum=40i 1700000000000000000\n"
        request = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/write?db=metrics",
                                         data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 204
        with psycopg.connect(srv.conninfo(), autocommit=True) as c:  # the same engine
            assert c.execute("SELECT city, temp, hum FROM metrics.weather").fetchall() == [("paris", 21.5, 40)]
    finally:
        assert srv.stop() == 0


def test_http_ingest_refuses_non_loopback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "omnilake", "serve", "-w", str(tmp_path / "wh"),
                           "--host", "0.0.0.0", "--port", "0", "--http-port", "0"],
                          capture_output=True, text=True, timeout=120, cwd=os.path.expanduser("~"))
    assert done.returncode == 1 and "no authentication" in done.stderr


def test_large_results_stream_in_chunks(server):
    """More rows than one encoded chunk (8192): simple protocol, extended protocol, and a
    portal read 5000 rows at a time, all complete and in order."""
    query = "SELECT a.n * 600 + b.n AS k FROM nums a, nums b WHERE a.n < 60 AND b.n < 600 ORDER BY k"
    expected = list(range(36_000))
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        simple = psycopg.ClientCursor(c)
        assert [r[0] for r in simple.execute(query).fetchall()] == expected
        assert [r[0] for r in c.execute(query, prepare=True).fetchall()] == expected
        # the rest of a simple-query batch still runs after a streamed result
        simple.execute(query + "; SELECT 'after'")
        assert simple.fetchall()[-1:] == [(35_999,)]
        assert simple.nextset() and simple.fetchall() == [("after",)]

    async def chunks():
        c = await asyncpg.connect(server.dsn())
        try:
            async with c.transaction():
                cursor = await c.cursor(query)
                got = []
                while True:
                    rows = await cursor.fetch(5000)
                    if not rows:
                        break
                    got.extend(r["k"] for r in rows)
            return got
        finally:
            await c.close()
    assert asyncio.run(chunks()) == expected


def test_prepared_statement_sees_new_rows_and_schema_changes(server):
    """A statement parsed once runs against the table as it is at each Execute."""
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE prep_t (a INT)")
        c.execute("INSERT INTO prep_t VALUES (1)")
    sock = connect(server)
    sock.sendall(parse(b"s1", b"SELECT * FROM prep_t ORDER BY a") + message(b"S", b""))
    assert [k for k, _ in read_messages(sock)] == [b"1", b"Z"]
    sock.sendall(run_portal(b"s1"))
    first = read_messages(sock)
    assert columns(first) == [b"a"] and rows(first) == [[b"1"]]
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("INSERT INTO prep_t VALUES (2)")
    sock.sendall(run_portal(b"s1"))
    assert rows(read_messages(sock)) == [[b"1"], [b"2"]]
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("ALTER TABLE prep_t ADD COLUMN b TEXT")
        c.execute("INSERT INTO prep_t VALUES (3, 'x')")
    sock.sendall(run_portal(b"s1"))
    after = read_messages(sock)
    assert columns(after) == [b"a", b"b"]
    assert rows(after) == [[b"1", None], [b"2", None], [b"3", b"x"]]
    sock.close()


def test_reparse_of_a_name_and_close_then_reuse(server):
    sock = connect(server)
    sock.sendall(parse(b"s1", b"SELECT 1") + message(b"S", b""))
    assert [k for k, _ in read_messages(sock)] == [b"1", b"Z"]
    sock.sendall(parse(b"s1", b"SELECT 2") + message(b"S", b""))
    messages = read_messages(sock)
    assert [k for k, _ in messages] == [b"E", b"Z"] and error_code(messages[0][1]) == "42P05"
    sock.sendall(run_portal(b"s1"))  # the first text is still the statement
    assert rows(read_messages(sock)) == [[b"1"]]
    sock.sendall(message(b"C", b"Ss1\0") + message(b"C", b"Sgone\0") + message(b"S", b""))
    assert [k for k, _ in read_messages(sock)] == [b"3", b"3", b"Z"]
    sock.sendall(run_portal(b"s1"))
    messages = read_messages(sock)
    assert [k for k, _ in messages] == [b"E", b"Z"] and error_code(messages[0][1]) == "26000"
    sock.sendall(parse(b"s1", b"SELECT 'again'") + run_portal(b"s1"))
    assert rows(read_messages(sock)) == [[b"again"]]
    # the unnamed statement is replaced by each Parse
    sock.sendall(parse(b"", b"SELECT 3") + parse(b"", b"SELECT 4") + run_portal(b""))
    assert rows(read_messages(sock)) == [[b"4"]]
    sock.close()


def test_replies_are_held_until_the_client_waits(server):
    """A pipelined Bind/Describe/Execute/Sync is answered in one write; a client that sends a
    message without Flush or Sync still gets its reply (nothing else is coming to wait for)."""
    sock = connect(server)
    sock.sendall(parse(b"", b"SELECT n FROM nums WHERE n < 3 ORDER BY n") + run_portal(b""))
    sock.settimeout(20)
    chunk = sock.recv(65536)
    kinds = [k for k, _ in read_messages_from(chunk)]
    assert kinds == [b"1", b"2", b"T", b"D", b"D", b"D", b"C", b"Z"]
    sock.sendall(parse(b"lone", b"SELECT 1"))  # no Sync, no Flush
    assert [k for k, _ in read_messages(sock, until=b"1")] == [b"1"]
    sock.close()


def test_an_error_while_reading_rows_is_reported_by_execute(server):
    """Describe of a portal starts the query and encodes its first rows ahead; an error met
    there still comes as Execute's answer, after the row description, as PostgreSQL does."""
    sock = connect(server)
    sock.sendall(parse(b"", b"SELECT 10 / n FROM nums") + run_portal(b""))
    messages = read_messages(sock)
    assert [k for k, _ in messages] == [b"1", b"2", b"T", b"E", b"Z"]
    assert error_code(messages[3][1]) == "22012"
    sock.sendall(message(b"Q", b"SELECT 1\0"))
    assert [k for k, _ in read_messages(sock)] == [b"T", b"D", b"C", b"Z"]
    sock.close()
