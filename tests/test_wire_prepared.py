"""Prepared statements executed many times: each Execute binds its own parameters into a
copy of the statement (made on the pool), the statement itself never changes, and bad
parameters fail that Execute only."""

from __future__ import annotations

import asyncio
import time

import pytest

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

from wire_server import start_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("prepared") / "wh"))
    with psycopg.connect(srv.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE kv (id BIGINT, val TEXT)")
        c.execute("INSERT INTO kv SELECT n, 'v' || n FROM (VALUES "
                  + ",".join(f"({i})" for i in range(200)) + ") t(n)")
    yield srv
    assert srv.stop() == 0


def test_one_statement_many_parameters(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        for key in (5, 17, 5, 199, 1000, 0):
            got = c.execute("SELECT val FROM kv WHERE id = %s", (key,), prepare=True).fetchall()
            assert got == ([(f"v{key}",)] if key < 200 else [])
        for low, high in ((0, 3), (10, 12), (198, 500)):
            got = c.execute("SELECT id FROM kv WHERE id >= %s AND id < %s ORDER BY id LIMIT 100",
                            (low, high), prepare=True).fetchall()
            assert got == [(i,) for i in range(low, min(high, 200))]


def test_asyncpg_prepared_reuse_and_bad_parameters(server):
    async def run():
        c = await asyncpg.connect(server.dsn())
        try:
            statement = await c.prepare("SELECT val FROM kv WHERE id = $1")
            got = [await statement.fetchval(k) for k in (1, 2, 3, 1)]
            doubled = [await c.fetchval("SELECT $1::int * 2", k) for k in (1, 2)]
            with pytest.raises(asyncpg.PostgresError):
                await c.fetchval("SELECT val FROM kv WHERE id = $1::bigint", "not a number")
            after = await statement.fetchval(7)  # the statement survives the failed Execute
            return got, doubled, after
        finally:
            await c.close()
    got, doubled, after = asyncio.run(run())
    assert got == ["v1", "v2", "v3", "v1"] and doubled == [2, 4] and after == "v7"


def test_raw_bind_with_invalid_parameter_text(server):
    """A parameter that does not parse as its type: an error for that Bind, skipping to
    Sync; the next Bind/Execute of the same statement works."""
    import socket
    import struct

    def message(kind, body):
        return kind + struct.pack("!i", len(body) + 4) + body

    def bind(value: bytes):
        return message(b"B", b"\0s1\0" + struct.pack("!hh", 0, 1) + struct.pack("!i", len(value))
                       + value + struct.pack("!h", 0))

    def read_until_ready(sock):
        data = b""
        kinds = []
        while True:
            while len(data) >= 5 and len(data) >= 1 + struct.unpack("!i", data[1:5])[0]:
                length = struct.unpack("!i", data[1:5])[0]
                kinds.append((data[:1], data[5:1 + length]))
                data = data[1 + length:]
                if kinds[-1][0] == b"Z":
                    return kinds
            data += sock.recv(65536)

    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        body = struct.pack("!i", 196608) + b"user\0tester\0database\0omnilake\0\0"
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        read_until_ready(sock)
        oid = struct.pack("!I", 20)  # int8
        sock.sendall(message(b"P", b"s1\0SELECT val FROM kv WHERE id = $1\0" + struct.pack("!h", 1) + oid)
                     + message(b"S", b""))
        assert [k for k, _ in read_until_ready(sock)] == [b"1", b"Z"]
        run = message(b"E", b"\0" + struct.pack("!i", 0)) + message(b"S", b"")
        sock.sendall(bind(b"12x") + run)
        reply = read_until_ready(sock)
        assert [k for k, _ in reply] == [b"E", b"Z"]
        assert b"22P02" in reply[0][1]
        sock.sendall(bind(b"12") + run)
        reply = read_until_ready(sock)
        assert [k for k, _ in reply] == [b"2", b"D", b"C", b"Z"]
        assert b"v12" in reply[1][1]


def test_key_lookups_over_the_wire(server):
    """Prepared `WHERE key = $1` statements run as key lookups (engine/key_lookup.py) once the
    table's file is cached: the same rows as before, in text and binary, a portal read a row
    at a time, a transaction's own rows, and a text key."""
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE users (id BIGINT, email TEXT, team INTEGER)")
        with c.cursor().copy("COPY users FROM STDIN") as copy:
            for i in range(5000):
                copy.write_row((i, f"u{i}@example.com", i % 7))
        deadline = time.monotonic() + 30
        while "memtable_rows=0" not in str(c.execute("EXPLAIN SELECT * FROM users").fetchall()):
            assert time.monotonic() < deadline, "the server did not flush"
            time.sleep(0.2)  # the server flushes pending rows on its own interval (5 s)
        for _ in range(3):
            c.execute("SELECT * FROM users WHERE team = 1").fetchall()  # the file is cached
        plan = c.execute("EXPLAIN SELECT email FROM users WHERE id = 7").fetchall()
        assert "KeyLookup" in str(plan)
        for key in (0, 4999, 2500, 5000, -1):
            got = c.execute("SELECT email, team FROM users WHERE id = %s", (key,),
                            prepare=True).fetchall()
            assert got == ([(f"u{key}@example.com", key % 7)] if 0 <= key < 5000 else [])
        got = c.cursor(binary=True).execute("SELECT id FROM users WHERE email = %s",
                                            ("u77@example.com",), prepare=True).fetchall()
        assert got == [(77,)]
        with c.transaction():
            c.execute("INSERT INTO users VALUES (42, 'second@example.com', 9)")
            got = c.execute("SELECT email FROM users WHERE id = %s", (42,), prepare=True).fetchall()
            assert sorted(got) == [("second@example.com",), ("u42@example.com",)]
            raise psycopg.Rollback
        got = c.execute("SELECT email FROM users WHERE id = %s", (42,), prepare=True).fetchall()
        assert got == [("u42@example.com",)]

    async def portal():
        conn = await asyncpg.connect(server.dsn())
        try:
            async with conn.transaction():
                rows = [tuple(r) async for r in conn.cursor(
                    "SELECT id, team FROM users WHERE team = $1 AND id = $2", 3, 10, prefetch=1)]
            return rows
        finally:
            await conn.close()
    assert asyncio.run(portal()) == [(10, 3)]
