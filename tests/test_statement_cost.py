"""What keeps the fixed cost per statement down must not change what a statement does:
`walk.nodes` walks as sqlglot does, a rewrite is skipped only when it has nothing to rewrite,
and memtable rows kept in scan types follow every write."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from omnilake.engine import rewrites
from omnilake.engine.dialect import Postgres, to_datafusion
from omnilake.engine.params import bind
from omnilake.engine.walk import Kinds, nodes

from conftest import rows

# Statements that give every rule something to do, alone and together; with parameters where
# a bound value is what a rule rewrites.
STATEMENTS = [
    ("SELECT 1", None),
    ("SELECT Id, \"Name\" FROM T WHERE id = %s", (1,)),
    ("SELECT '\\x0102'::bytea, %s::bytea", ("\\x0a",)),
    ("SELECT l2_distance(v, '[1,2]') FROM t ORDER BY cosine_distance(v, %s) LIMIT 3", ([1.0, 2.0],)),
    ("SELECT id FROM t ORDER BY v <-> %s LIMIT 5", ("[1, 2, 3]",)),
    ("SELECT inner_product(v, '[1,2]'), vector_dims('[1,2,3]'), '[3,4]'::vector", None),
    ("SELECT id FROM t WHERE v <=> %s::vector < 0.5", ("[0.5, 0.5]",)),
    ("SELECT * FROM t WHERE NOT (x IN (0) AND x IN (%s)) AND y IN (1, 2)", (1,)),
    ("SELECT time_bucket(%s, ts) AS b, first(v, ts), last(v, ts), delta(v, ts), "
     "increase(v, ts), rate(v, ts) FROM m GROUP BY 1", ("5 minutes",)),
    ("SELECT time_bucket('1 day', ts, %s) FROM m", (dt.datetime(2024, 1, 1),)),
    ("SELECT blob_read(b), blob_read(b, 2), embed(t, 'minilm') FROM docs", None),
    ("WITH x AS (SELECT a FROM t WHERE a IN (1) AND a IN (2)) SELECT count(*) FROM x", None),
    ("INSERT INTO t (a, b) VALUES (%s, %s)", (1, "[1,2]")),
    ("UPDATE t SET v = %s WHERE id IN (%s) AND id IN (3)", (np.array([1.0, 2.0]), 3)),
]


@pytest.mark.parametrize("sql", [s for s, _ in STATEMENTS] + [
    "SELECT a FROM (SELECT b AS a FROM t JOIN u USING (k)) s WHERE a > ALL (SELECT 1)",
    "SELECT CASE WHEN a THEN b ELSE c END, ARRAY[1, -2, 3], x::int[] FROM t",
])
def test_nodes_walk_as_sqlglot_does(sql):
    tree = sqlglot.parse_one(sql.replace("%s", "1"), dialect=Postgres)
    assert [id(n) for n in nodes(tree)] == [id(n) for n in tree.walk()]
    prune = rewrites._literal_array
    assert [id(n) for n in nodes(tree, prune)] == [id(n) for n in tree.walk(prune=prune)]


def _every_rule(tree):
    for rule, _ in rewrites.RULES:
        tree = rule(tree)
    return tree


@pytest.mark.parametrize("sql,params", STATEMENTS)
def test_skipped_rules_had_nothing_to_rewrite(sql, params):
    def parsed():
        tree = sqlglot.parse_one(sql, dialect=Postgres)
        return bind(tree, params) if params is not None else tree
    assert to_datafusion(rewrites.apply(parsed())) == to_datafusion(_every_rule(parsed()))


def test_kinds_see_types_and_function_names():
    kinds = Kinds(sqlglot.parse_one("SELECT Time_Bucket('1 h', ts), x::bytea FROM t",
                                    dialect=Postgres))
    assert kinds.calls("time_bucket") and not kinds.calls("blob_read")
    assert kinds.has(sqlglot.exp.Cast) and not kinds.has(sqlglot.exp.In)
    assert kinds.has(sqlglot.exp.Func)  # subclasses count


def test_memtable_rows_in_scan_types_follow_writes(conn, cur):
    from omnilake.engine.query import _SCAN_READY
    cur.execute("CREATE TABLE p (id BIGINT, name TEXT)")
    conn.insert("p", pa.table({"id": [1, 2], "name": ["a", "b"]}))
    query = "SELECT id, name FROM p ORDER BY id"
    assert rows(cur, query) == [(1, "a"), (2, "b")]
    kept = {id(ready) for _, ready, _ in _SCAN_READY._entries.values()}
    assert rows(cur, query) == [(1, "a"), (2, "b")]  # served from the kept rows
    assert {id(ready) for _, ready, _ in _SCAN_READY._entries.values()} == kept
    cur.execute("INSERT INTO p VALUES (3, 'c')")
    assert rows(cur, query) == [(1, "a"), (2, "b"), (3, "c")]
    cur.execute("ALTER TABLE p ADD COLUMN x INT")  # flushes; new layout
    conn.insert("p", pa.table({"id": [4], "name": ["d"], "x": [7]}))
    assert rows(cur, "SELECT id, name, x FROM p ORDER BY id") == [
        (1, "a", None), (2, "b", None), (3, "c", None), (4, "d", 7)]
    cur.execute("DELETE FROM p WHERE id = 4")
    assert rows(cur, "SELECT count(*) FROM p") == [(3,)]
