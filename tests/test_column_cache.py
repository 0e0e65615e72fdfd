"""The in-memory cache of decoded columns (engine/column_cache.py): every query gives the same
rows with the cache as through the Parquet reader, after schema changes too, and the cache
stays within its budget."""

from collections import namedtuple

import numpy as np
import pyarrow as pa
import pytest
from datafusion import SessionContext
from hypothesis import given, settings
from hypothesis import strategies as st

import omnilake
from omnilake.engine.column_cache import ColumnCache, series_edges

QUERIES = [
    "SELECT * FROM items ORDER BY id",
    "SELECT i.* FROM items i ORDER BY i.id",
    "SELECT count(*) FROM items",
    "SELECT count(*), sum(price) FROM items WHERE qty > 3",
    "SELECT id, name FROM items WHERE id = 17",
    "SELECT name AS label, price * qty AS total FROM items ORDER BY total DESC, label LIMIT 5",
    "SELECT 1 FROM items LIMIT 2",
    "SELECT kind, avg(price), max(day) FROM items GROUP BY kind ORDER BY kind",
    "SELECT id FROM items ORDER BY 1 DESC LIMIT 3",
    "SELECT i.id, k.label FROM items i JOIN kinds k ON i.kind = k.kind ORDER BY i.id LIMIT 7",
    "SELECT id, label FROM items JOIN kinds USING (kind) ORDER BY id LIMIT 7",
    "SELECT * FROM items NATURAL JOIN kinds ORDER BY id LIMIT 7",
    "WITH top AS (SELECT kind, max(price) AS p FROM items GROUP BY kind) "
    "SELECT k.label, top.p FROM top JOIN kinds k ON k.kind = top.kind ORDER BY 1",
    "SELECT id FROM items WHERE price > (SELECT avg(price) FROM items) ORDER BY id",
    "SELECT id, rank() OVER (PARTITION BY kind ORDER BY price DESC) FROM items ORDER BY id",
    'SELECT "Mixed", flag FROM items WHERE flag ORDER BY "Mixed" LIMIT 4',
    "SELECT id, v <-> '[1,0,0]' AS d FROM items ORDER BY d, id LIMIT 3",
    "SELECT day, count(*) FROM items WHERE day >= '2024-01-10' GROUP BY day ORDER BY day",
    "SELECT EXTRACT(day FROM day) AS d, count(*) FROM items GROUP BY 1 ORDER BY 1",
]


def _load(path, files=3, rows=200):
    """Tables whose rows sit in several flushed data files."""
    with omnilake.connect(path) as conn:
        cur = conn.cursor()
        cur.execute('CREATE TABLE items (id BIGINT, name TEXT, kind INT, price DOUBLE PRECISION, '
                    'qty INT, day DATE, flag BOOLEAN, "Mixed" TEXT, v VECTOR(3))')
        cur.execute("CREATE TABLE kinds (kind INT, label TEXT)")
        cur.execute("INSERT INTO kinds VALUES (0, 'zero'), (1, 'one'), (2, 'two'), (3, 'three')")
        rng = np.random.default_rng(7)
        for f in range(files):
            ids = np.arange(f * rows, (f + 1) * rows)
            conn.insert("items", pa.table({
                "id": ids, "name": [f"item{i}" for i in ids], "kind": ids % 4,
                "price": rng.random(rows).round(3), "qty": rng.integers(0, 8, rows).astype("int32"),
                "day": pa.array(np.datetime64("2024-01-01") + (ids % 30).astype("timedelta64[D]")),
                "flag": ids % 3 == 0, "Mixed": [f"M{i % 11}" for i in ids],
                "v": rng.random((rows, 3)).astype("float32").tolist()}))
            conn.flush()


def _rounded(rows):
    """Rows with floats to 9 digits: sums over differently batched data differ in the last bits."""
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def _answers(path, queries, repeat=3, **settings):
    """Each query's rows, run `repeat` times on one connection (first scan from Parquet,
    then admitted, then from memory); the runs must agree. Also the cache's stats."""
    with omnilake.connect(path, **settings) as conn:
        cur = conn.cursor()
        answers = []
        for sql in queries:
            runs = []
            for _ in range(repeat):
                cur.execute(sql)
                runs.append(_rounded(cur.fetchall()))
            assert all(run == runs[0] for run in runs), sql
            answers.append(runs[0])
        return answers, conn.session.engine.column_cache.stats()


def test_cached_results_equal_the_parquet_reader(tmp_path):
    _load(tmp_path)
    expected, off = _answers(tmp_path, QUERIES, column_cache_bytes=0)
    got, on = _answers(tmp_path, QUERIES)
    for sql, want, have in zip(QUERIES, expected, got):
        assert have == want, sql
    assert off["hits"] == 0 and off["files"] == 0
    assert on["files"] == 4 and on["hits"] > 0 and 0 < on["bytes"] <= on["budget"]


def test_a_file_is_cached_on_its_second_scan_and_only_the_columns_read(tmp_path):
    _load(tmp_path, files=1)
    with omnilake.connect(tmp_path) as conn:
        cache = conn.session.engine.column_cache
        cur = conn.cursor()
        cur.execute("SELECT sum(price) FROM items")
        assert cache.stats()["files"] == 0
        cur.execute("SELECT sum(price) FROM items")
        one_column = cache.stats()["bytes"]
        assert cache.stats()["files"] == 1 and 0 < one_column <= 200 * 8 + 64
        cur.execute("SELECT sum(price), max(name) FROM items")
        assert cache.stats()["bytes"] > one_column
        assert cache.stats()["loads"] == 2  # price, then name with price again
        cur.execute("SELECT files, bytes > 0, hits, loads FROM omnilake_system.column_cache")
        assert cur.fetchall() == [(1, True, 0, 2)]


def test_schema_changes_after_caching(tmp_path):
    _load(tmp_path, files=2)
    changes = ["ALTER TABLE items RENAME COLUMN name TO title",
               "ALTER TABLE items ADD COLUMN note TEXT",
               "ALTER TABLE items ALTER COLUMN qty TYPE BIGINT",
               "ALTER TABLE items DROP COLUMN flag"]
    after = ["SELECT * FROM items ORDER BY id LIMIT 5",
             "SELECT title, note, qty FROM items WHERE id IN (3, 250) ORDER BY id",
             "SELECT sum(qty), count(note) FROM items"]
    with omnilake.connect(tmp_path) as conn:
        cur = conn.cursor()
        for _ in range(2):  # cache every column
            cur.execute("SELECT * FROM items")
        assert conn.session.engine.column_cache.stats()["files"] == 2
        for sql in changes:
            cur.execute(sql)
        cur.execute("INSERT INTO items (id, title, note, qty) VALUES (1000, 'new', 'n', 5)")
        got = []
        for sql in after:
            cur.execute(sql)
            got.append(cur.fetchall())
    expected, _ = _answers(tmp_path, after, repeat=1, column_cache_bytes=0)
    assert got == expected
    assert got[1][0][1] is None and got[2][0][1] == 1


def test_budget_bounds_the_cache_and_large_scans_stream(tmp_path):
    _load(tmp_path, files=6, rows=2000)
    one_file = 2000 * 8  # the price column of one file
    sql = ["SELECT sum(price), count(*) FROM items", "SELECT max(price) FROM items"]
    expected, _ = _answers(tmp_path, sql, column_cache_bytes=0)
    got, stats = _answers(tmp_path, sql, column_cache_bytes=int(2.5 * one_file))
    assert got == expected
    assert 0 < stats["bytes"] <= stats["budget"] and stats["files"] <= 2
    got, stats = _answers(tmp_path, sql, column_cache_bytes=one_file // 2)
    assert got == expected and stats["files"] == 0 and stats["bytes"] == 0


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_bad_budget_setting(tmp_path, value):
    with pytest.raises(omnilake.errors.Error) as info:
        omnilake.connect(tmp_path, column_cache_bytes=value)
    assert "column_cache_bytes" in str(info.value)


def test_columns_decoded_at_different_times_line_up():
    """DataFusion reads a file's parts in parallel, so two reads of one file may give its rows
    in different orders: a column decoded later must never be paired with another order."""
    Col = namedtuple("Col", "field_id sql_type name")
    a, b = Col(1, "bigint", "a"), Col(2, "bigint", "b")
    rng = np.random.default_rng(3)
    values = np.arange(1000)

    def decode(columns):  # every read in a new order, as parallel partitions may give
        order = rng.permutation(len(values))
        table = pa.table({c.name: values[order] * c.field_id for c in columns})
        return [table.slice(0, 600), table.slice(600)]  # (one table per partition)

    cache = ColumnCache(budget=1 << 20, partitions=2)
    ctx = SessionContext()
    schema_a = pa.schema([("a", pa.int64())])
    schema_ab = pa.schema([("a", pa.int64()), ("b", pa.int64())])
    assert cache.frame(ctx, "f", [a], schema_a, cache.scan_budget(), decode) is None  # first scan
    cache.frame(ctx, "f", [a], schema_a, cache.scan_budget(), decode)
    both, rows = cache.frame(ctx, "f", [a, b], schema_ab, cache.scan_budget(), decode)
    both = both.to_arrow_table()
    assert rows == 1000
    assert both.num_rows == 1000
    assert (both["b"].to_numpy() == 2 * both["a"].to_numpy()).all()
    again = cache.frame(ctx, "f", [a], schema_a, cache.scan_budget(), decode)[0].to_arrow_table()
    assert sorted(again["a"].to_pylist()) == list(range(1000))


# -- series edges: the first and last row of each run of one series ---------------------------
def _runs(keys: list) -> list[tuple[int, int]]:
    """(first, last) position of each run of equal keys (None equal to None), by hand."""
    runs = []
    for i, key in enumerate(keys):
        if runs and keys[runs[-1][0]] == key:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.sampled_from([1, 2, None]),
                               st.integers(0, 5)), min_size=1, max_size=40))
def test_series_edges_are_each_runs_first_and_last_row(rows):
    tags = [pa.array([r[0] for r in rows], pa.string_view()), pa.array([r[1] for r in rows], pa.int64())]
    times = pa.array([r[2] for r in rows], pa.timestamp("us", "UTC"))
    runs = _runs([r[:2] for r in rows])
    ordered = all(rows[i][2] <= rows[i + 1][2] for first, last in runs for i in range(first, last))
    edges = series_edges(tags, times)
    expected = sorted({p for run in runs for p in run})
    if not ordered or (len(rows) > 16 and len(expected) * 8 > len(rows)):
        assert edges is None  # (or too many series for the edges to gain anything)
    else:
        assert edges is not None and edges.tolist() == expected


def test_series_edges_decline_null_times_and_too_many_series():
    tags = [pa.array(["a", "a", "b"])]
    assert series_edges(tags, pa.array([1, None, 2], pa.int64())) is None
    assert series_edges(tags, pa.array([1, 2, 2], pa.int64())).tolist() == [0, 1, 2]
    many = pa.array(np.arange(100) // 2)  # a run of two rows per series: nothing to gain
    assert series_edges([many], pa.array(np.arange(100))) is None
    few = pa.array(np.arange(100) // 25)
    assert series_edges([few], pa.array(np.arange(100))).tolist() == [
        0, 24, 25, 49, 50, 74, 75, 99]
    assert series_edges([pa.array([], pa.int64())], pa.array([], pa.int64())).tolist() == []
