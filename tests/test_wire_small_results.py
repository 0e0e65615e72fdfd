"""Queries whose result is bounded by their text run to completion instead of streaming
(server/small_results.py): which ones qualify, and that both paths answer the same over
real sockets, in the simple and the extended protocol, with row limits on portals."""

from __future__ import annotations

import asyncio

import pytest
import sqlglot

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

from wire_server import start_server  # noqa: E402

from omnilake.server.small_results import bounded, max_rows  # noqa: E402


def _rows(sql: str):
    return max_rows(sqlglot.parse_one(sql, dialect="postgres"))


@pytest.mark.parametrize("sql, rows", [
    ("SELECT 1", 1),
    ("SELECT 1, 'a', now()", 1),
    ("SELECT 1 WHERE false", 1),
    ("SELECT version()", 1),
    ("SELECT (SELECT max(n) FROM t)", 1),
    ("SELECT n FROM t LIMIT 5", 5),
    ("SELECT n FROM t LIMIT 5 OFFSET 1000000", 5),
    ("SELECT n FROM t FETCH FIRST 3 ROWS ONLY", 3),
    ("SELECT count(*) FROM t", 1),
    ("SELECT sum(n), max(n) FROM t WHERE n > 3 HAVING sum(n) > 0", 1),
    ("SELECT count(*) FILTER (WHERE n > 1) FROM t", 1),
    ("VALUES (1), (2), (3)", 3),
    ("SELECT 1 UNION ALL SELECT 2", 2),
    ("(SELECT 1) UNION (SELECT 2) UNION (SELECT 3)", 3),
    ("SELECT 1 EXCEPT SELECT n FROM t", 1),
    ("SELECT n FROM t INTERSECT SELECT 1", 1),
    ("SELECT n FROM t UNION ALL SELECT n FROM t LIMIT 7", 7),
])
def test_bounded_queries(sql, rows):
    assert _rows(sql) == rows


@pytest.mark.parametrize("sql", [
    "SELECT n FROM t",
    "SELECT n FROM t WHERE n = 5",  # a key need not be unique
    "SELECT n FROM t LIMIT $1",  # known only at Bind
    "SELECT n FROM t LIMIT ALL",
    "SELECT n, count(*) FROM t GROUP BY n",
    "SELECT DISTINCT count(*) OVER () FROM t",
    "SELECT count(*) OVER () FROM t",
    "SELECT unnest(ARRAY[1, 2, 3])",  # set-returning functions make rows without FROM
    "SELECT generate_series(1, 1000000)",
    "SELECT generate_subscripts(ARRAY[1, 2], 1)",
    "SELECT jsonb_each('{}'::jsonb)",
    "SELECT 1 UNION ALL SELECT n FROM t",
    "SELECT n FROM t INTERSECT SELECT n FROM t",
    "SELECT n FROM (SELECT n FROM t LIMIT 3) s JOIN t USING (n)",
    "INSERT INTO t VALUES (1)",
    "CREATE TABLE u (n INT)",
])
def test_unbounded_statements(sql):
    assert _rows(sql.replace("$1", "$1 ")) is None


def test_bounded_respects_the_chunk_size():
    tree = sqlglot.parse_one("SELECT n FROM t LIMIT 10000", dialect="postgres")
    assert not bounded(tree, 8192) and bounded(tree, 10_000)
    assert not bounded(None, 8192)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("small") / "wh"))
    with psycopg.connect(srv.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE nums (n INT, label TEXT)")
        c.execute("INSERT INTO nums SELECT n, 'n' || n FROM (VALUES "
                  + ",".join(f"({i})" for i in range(600)) + ") v(n)")
    yield srv
    assert srv.stop() == 0


QUERIES = [  # (query, expected rows): bounded ones, then ones that stream
    ("SELECT 1", [(1,)]),
    ("SELECT 1 AS a, 'x' AS b, NULL::int AS c", [(1, "x", None)]),
    ("SELECT 1 WHERE false", []),
    ("SELECT count(*), sum(n) FROM nums", [(600, sum(range(600)))]),
    ("SELECT count(*) FROM nums WHERE n < 0", [(0,)]),
    ("SELECT n, label FROM nums ORDER BY n LIMIT 3", [(0, "n0"), (1, "n1"), (2, "n2")]),
    ("SELECT n FROM nums WHERE n > 1000 LIMIT 5", []),
    ("VALUES (1, 'a'), (2, 'b')", [(1, "a"), (2, "b")]),
    ("SELECT 1 UNION ALL SELECT 2 ORDER BY 1", [(1,), (2,)]),
    ("SELECT unnest(ARRAY[3, 1, 2])", [(3,), (1,), (2,)]),
    ("SELECT n FROM nums WHERE n % 100 = 7 ORDER BY n", [(i,) for i in range(7, 600, 100)]),
    ("SELECT a.n * 600 + b.n AS k FROM nums a, nums b WHERE a.n < 20 ORDER BY k",
     [(i,) for i in range(12_000)]),
]


@pytest.mark.parametrize("query, expected", QUERIES)
def test_same_rows_both_protocols(server, query, expected):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        simple = psycopg.ClientCursor(c)
        assert simple.execute(query).fetchall() == expected
        for _ in range(2):  # the second run reuses the prepared statement
            assert c.execute(query, prepare=True).fetchall() == expected
        assert c.execute(query, binary=True).fetchall() == expected


def test_bounded_results_in_portal_pieces(server):
    """A materialised result read a few rows at a time: PortalSuspended between pieces."""
    query = "SELECT n FROM nums ORDER BY n LIMIT 50"

    async def read():
        c = await asyncpg.connect(server.dsn())
        try:
            async with c.transaction():
                cursor = await c.cursor(query)
                got = []
                while rows := await cursor.fetch(7):
                    got.append([r["n"] for r in rows])
            return got, await c.fetchval("SELECT count(*) FROM nums"), \
                await c.fetch("SELECT $1::int + 1 AS x", 41)
        finally:
            await c.close()
    pieces, count, params = asyncio.run(read())
    assert [len(p) for p in pieces] == [7] * 7 + [1]
    assert sum(pieces, []) == list(range(50))
    assert count == 600 and params[0]["x"] == 42


def test_bounded_query_errors_and_batches(server):
    """Errors from a bounded query, and a simple-query batch mixing both kinds."""
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        simple = psycopg.ClientCursor(c)
        with pytest.raises(psycopg.errors.DivisionByZero):
            simple.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.Error):
            c.execute("SELECT count(*) FROM no_such_table", prepare=True)
        assert c.execute("SELECT 2").fetchone() == (2,)  # the connection still serves
        simple.execute("SELECT 1; SELECT n FROM nums WHERE n < 3 ORDER BY n; SELECT count(*) FROM nums")
        assert simple.fetchall() == [(1,)]
        assert simple.nextset() and simple.fetchall() == [(0,), (1,), (2,)]
        assert simple.nextset() and simple.fetchall() == [(600,)]
        c.execute("BEGIN")
        assert c.execute("SELECT count(*) FROM nums", prepare=True).fetchone() == (600,)
        c.execute("INSERT INTO nums VALUES (1000, 'x')")
        assert c.execute("SELECT count(*) FROM nums", prepare=True).fetchone() == (601,)
        c.execute("ROLLBACK")
        assert c.execute("SELECT count(*) FROM nums", prepare=True).fetchone() == (600,)


def test_group_by_texts_kept_prepared(server):
    """GROUP BYs run from the tree kept for their text (TextPlans), in the simple and the
    extended protocol: served from the cache, streamed past one chunk, through DataFusion,
    errors, transactions."""
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        simple = psycopg.ClientCursor(c)
        c.execute("CREATE TABLE grid (k INT)")
        c.execute("INSERT INTO grid SELECT a.n * 600 + b.n FROM nums a, nums b WHERE a.n < 20")
        small = "SELECT label, max(n) AS m FROM nums WHERE n < 3 GROUP BY label ORDER BY label"
        many = "SELECT k, count(*) FROM grid GROUP BY k ORDER BY k"  # 12,000 groups
        compared = ("SELECT label, max(n) FROM nums WHERE n >= n AND n < 2 GROUP BY label "
                    "ORDER BY 1")  # a column against a column: DataFusion's
        extended = c.cursor()
        for _ in range(3):  # (the files are cached from their second scan)
            for cursor, options in ((simple, {}), (extended, {}), (extended, {"prepare": True}),
                                    (extended, {"binary": True})):
                cursor.execute(small, **options)
                assert cursor.fetchall() == [("n0", 0), ("n1", 1), ("n2", 2)]
                assert [d.name for d in cursor.description] == ["label", "m"]
                assert cursor.execute(many, **options).fetchall() == [(k, 1) for k in range(12_000)]
                assert cursor.execute(compared, **options).fetchall() == [("n0", 0), ("n1", 1)]
        with pytest.raises(psycopg.errors.UndefinedColumn):
            simple.execute("SELECT label, max(nope) FROM nums GROUP BY label")
        c.execute("BEGIN")
        c.execute("INSERT INTO nums VALUES (-1, 'n0')")
        assert simple.execute(small).fetchall() == [("n0", 0), ("n1", 1), ("n2", 2)]
        assert simple.execute(small.replace("max", "min")).fetchall()[0] == ("n0", -1)
        c.execute("ROLLBACK")
        assert simple.execute(small.replace("max", "min")).fetchall()[0] == ("n0", 0)
