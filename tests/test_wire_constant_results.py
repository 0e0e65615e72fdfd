"""Constant statements (`SELECT 1`) are answered from the reply of their first run
(server/constant_results.py): which statements qualify, that the kept reply is the engine's
own in the simple and extended protocols, text and binary, that a repeat makes no trip to the
statement pool, and that errors and failed transactions still get the engine's answer.
The server runs in this process (on a thread of its own) so the test can count the trips;
the client is psycopg over a real socket."""

from __future__ import annotations

import asyncio

import pytest
import sqlglot

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

from omnilake.server.constant_results import (ConstantReply, ConstantResults,  # noqa: E402
                                              is_constant)
from wire_server import in_process_server  # noqa: E402


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "SELECT 1 AS one, 'two' AS two, NULL, true, -3.5",
    "SELECT (1 + 2) * 3 - 4 / 2, 7 % 3, 'a' || 'b'",
    "SELECT CAST(1 AS BIGINT), 2::text, '3'::int, 1::boolean, 2.5::double precision",
])
def test_constant_statements(sql):
    assert is_constant(sqlglot.parse_one(sql, dialect="postgres"))


@pytest.mark.parametrize("sql", [
    "SELECT now()",
    "SELECT random()",
    "SELECT current_setting('TimeZone')",
    "SELECT version()",
    "SELECT '2024-01-01'::timestamptz",  # its text depends on TimeZone
    "SELECT '2024-01-01'::date",  # and DateStyle
    "SELECT 'abc'::varchar(2)",
    "SELECT $1",
    "SELECT 1 FROM t",
    "SELECT 1 WHERE false",
    "SELECT 1 LIMIT 0",
    "SELECT DISTINCT 1",
    "SELECT 1 UNION SELECT 2",
    "VALUES (1)",
    "SELECT (SELECT 1)",
    "SELECT 1 INTO t",
    "INSERT INTO t VALUES (1)",
])
def test_statements_that_are_not_constant(sql):
    assert not is_constant(sqlglot.parse_one(sql.replace("$1", "$1 "), dialect="postgres"))
    assert not is_constant(None)


def test_replies_are_bounded():
    results = ConstantResults(max_entries=2)
    reply, tree = ConstantReply(None, b"D", (b"r",), "SELECT 1"), sqlglot.parse_one("SELECT 1")
    for text in ("a", "b", "c"):
        results.keep(text, (0,), reply, tree)
    assert results.get("a", (0,)) is None  # the oldest went first
    assert results.get("b", (0,)) is reply and results.get("c", (0,)) is reply
    assert results.get("b", (1,)) is None  # another result format is another reply
    assert results.parsed("a") is None and results.parsed("c") == tree
    assert results.parsed("c") is not tree  # a copy: the caller may change it
    results.keep("big", (0,), ConstantReply(None, b"D", (b"x" * 5000,), "SELECT 1"), tree)
    assert results.get("big", (0,)) is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with in_process_server(str(tmp_path_factory.mktemp("constant") / "wh")) as srv:
        yield srv


def _answer(cursor, sql, **options):
    cursor.execute(sql, **options)
    return [(d.name, d.type_code) for d in cursor.description], cursor.fetchall()


@pytest.mark.parametrize("protocol", ["simple", "extended", "prepared", "binary"])
def test_a_kept_reply_is_the_engines_answer(server, protocol):
    sql = f"SELECT 7 AS n, 'x' || '{protocol}' AS s, NULL AS z, 2.5::double precision, true, (3 - 10) * 2"
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        cursor = {"simple": psycopg.ClientCursor(c), "binary": c.cursor(binary=True)}.get(
            protocol, c.cursor())
        options = {"prepare": True} if protocol == "prepared" else {}
        before = len(server.trips)
        first = _answer(cursor, sql, **options)
        after_first = len(server.trips)
        again = [_answer(cursor, sql, **options) for _ in range(3)]
    assert after_first > before  # the first run went through the engine on the pool
    assert len(server.trips) == after_first  # the repeats did not
    assert again == [first] * 3
    names, values = first
    assert [n for n, _ in names][:3] == ["n", "s", "z"]
    assert values == [(7, f"x{protocol}", None, 2.5, True, -14)]


def test_errors_are_not_kept_and_failed_transactions_still_fail(server):
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        for _ in range(2):
            before = len(server.trips)
            with pytest.raises(psycopg.errors.DivisionByZero):
                c.execute("SELECT 1 / 0")
            assert len(server.trips) > before  # every run asks the engine
        assert c.execute("SELECT 11").fetchall() == [(11,)]
        assert c.execute("SELECT 11").fetchall() == [(11,)]  # kept
        c.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 11")
        cursor = psycopg.ClientCursor(c)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            cursor.execute("SELECT 11")
        c.execute("ROLLBACK")
        assert c.execute("SELECT 11").fetchall() == [(11,)]
        with c.transaction():  # inside a transaction that is fine, a kept reply serves
            assert cursor.execute("SELECT 11").fetchall() == [(11,)]


def test_a_row_limit_on_a_kept_reply(server):
    """asyncpg's cursor executes its portal a row at a time (Execute with a row limit)."""
    async def main():
        c = await asyncpg.connect(host="127.0.0.1", port=server.port, user="tester",
                                  database="omnilake")
        try:
            got = []
            for _ in range(3):
                async with c.transaction():
                    got.append([tuple(r) async for r in c.cursor("SELECT 5, 6", prefetch=1)])
            return got
        finally:
            await c.close()
    assert asyncio.run(main()) == [[(5, 6)]] * 3
