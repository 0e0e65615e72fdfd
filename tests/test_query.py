"""SELECT: joins, aggregates, windows, CTEs, subqueries, EXPLAIN, SHOW, information_schema,
time travel; results compared with DuckDB on the same data."""

import datetime as dt
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from omnilake import errors as E

from conftest import rows


@pytest.fixture
def shop(conn, cur):
    cur.execute("CREATE TABLE customers (id INT PRIMARY KEY, name TEXT, country TEXT)")
    cur.execute("CREATE TABLE orders (id INT, customer_id INT, amount DOUBLE PRECISION, day DATE)")
    cur.execute("INSERT INTO customers VALUES (1, 'ann', 'DE'), (2, 'bob', 'FR'), (3, 'cid', 'DE'), "
                "(4, 'dee', NULL)")
    cur.execute("INSERT INTO orders VALUES (1, 1, 10, '2024-01-01'), (2, 1, 20, '2024-01-02'), "
                "(3, 2, 5, '2024-01-02'), (4, 3, 7.5, '2024-01-03'), (5, 99, 1, '2024-01-03')")
    return cur


def test_join_group_order(shop):
    assert rows(shop, """SELECT c.country, count(*) AS n, sum(o.amount) AS total
                         FROM orders o JOIN customers c ON o.customer_id = c.id
                         GROUP BY c.country ORDER BY total DESC""") == [("DE", 3, 37.5), ("FR", 1, 5.0)]


def test_outer_joins_keep_unmatched(shop):
    assert rows(shop, """SELECT c.name, o.id FROM customers c LEFT JOIN orders o
                         ON o.customer_id = c.id WHERE o.id IS NULL""") == [("dee", None)]
    assert rows(shop, """SELECT o.id FROM orders o LEFT JOIN customers c ON o.customer_id = c.id
                         WHERE c.id IS NULL""") == [(5,)]


def test_window_cte_subquery(shop):
    assert rows(shop, """WITH totals AS (SELECT customer_id, sum(amount) AS total FROM orders
                                         GROUP BY customer_id)
                         SELECT customer_id, total, rank() OVER (ORDER BY total DESC) AS r
                         FROM totals WHERE customer_id IN (SELECT id FROM customers)
                         ORDER BY r""") == [(1, 30.0, 1), (3, 7.5, 2), (2, 5.0, 3)]
    assert rows(shop, """SELECT name FROM customers c WHERE EXISTS
                         (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.amount > 6)
                         ORDER BY name""") == [("ann",), ("cid",)]
    assert rows(shop, """SELECT id, amount, sum(amount) OVER (PARTITION BY customer_id ORDER BY id)
                         FROM orders WHERE customer_id = 1 ORDER BY id""") == [(1, 10.0, 10.0),
                                                                              (2, 20.0, 30.0)]


def test_same_table_twice_and_cte_shadowing(shop):
    assert rows(shop, """SELECT a.id, b.id FROM customers a JOIN customers b ON a.country = b.country
                         AND a.id < b.id""") == [(1, 3)]
    assert rows(shop, "WITH orders AS (SELECT 42 AS id) SELECT id FROM orders") == [(42,)]


def test_values_and_union(cur):
    assert rows(cur, "VALUES (1, 'a'), (2, 'b')") == [(1, "a"), (2, "b")]
    assert rows(cur, "SELECT 1 AS x UNION ALL SELECT 2 ORDER BY x") == [(1,), (2,)]


def test_show_tables_and_information_schema(shop):
    assert rows(shop, "SHOW TABLES") == [("public", "customers"), ("public", "orders")]
    assert rows(shop, """SELECT table_schema, table_name, table_type FROM information_schema.tables
                         ORDER BY table_name""") == [("public", "customers", "BASE TABLE"),
                                                     ("public", "orders", "BASE TABLE")]
    assert rows(shop, """SELECT column_name, is_nullable FROM information_schema.columns
                         WHERE table_name = 'customers' ORDER BY ordinal_position""") == [
        ("id", "NO"), ("name", "YES"), ("country", "YES")]
    assert ("public",) in rows(shop, "SELECT schema_name FROM information_schema.schemata")


def test_explain_shows_pushdown_and_pruning(conn, cur):
    cur.execute("CREATE TABLE big (id BIGINT, grp TEXT, v DOUBLE PRECISION)")
    for start in range(0, 5000, 1000):
        conn.insert("big", pa.table({"id": np.arange(start, start + 1000),
                                     "grp": [f"g{start}"] * 1000, "v": np.arange(1000) * 0.5}))
        conn.flush("big")
    plan = dict(rows(cur, "EXPLAIN SELECT v FROM big WHERE id BETWEEN 1200 AND 1300"))
    scan = plan["omnilake_scan"]
    assert "files=1/5 pruned=4" in scan and "id >= 1200" in scan
    assert "projection=[id, v]" in plan["physical_plan"] or "projection=[v, id]" in plan["physical_plan"]
    assert "predicate=" in plan["physical_plan"]
    assert rows(cur, "SELECT count(*) FROM big WHERE id BETWEEN 1200 AND 1300") == [(101,)]
    # A predicate on the null-supplying side of an outer join must not prune that side.
    assert rows(cur, """SELECT count(*) FROM big a LEFT JOIN big b ON a.id = b.id + 4000
                        WHERE b.id IS NULL""") == [(4000,)]
    assert rows(cur, "EXPLAIN ANALYZE SELECT count(*) FROM big")


def test_explain_rejects_writes(cur):
    with pytest.raises(E.NotSupportedError):
        cur.execute("EXPLAIN DELETE FROM t")


def test_explain_takes_parameters(conn, cur):
    cur.execute("CREATE TABLE ep (id INT, note TEXT)")
    cur.execute("INSERT INTO ep VALUES (1, 'a  b'), (2, 'c')")
    conn.flush()
    plan = dict(rows(cur, "EXPLAIN SELECT note FROM ep WHERE id = %s", (2,)))
    assert "id = 2" in plan["omnilake_scan"]
    analyzed = rows(cur, "EXPLAIN ANALYZE SELECT count(*) FROM ep WHERE note = %(n)s", {"n": "a  b"})
    assert any("output_rows=1" in line for _, line in analyzed)
    with pytest.raises(E.ProgrammingError, match="placeholder"):
        cur.execute("EXPLAIN SELECT note FROM ep WHERE id = %s")


def test_time_travel_by_snapshot_and_timestamp(conn, cur):
    cur.execute("CREATE TABLE tt (a INT)")
    cur.execute("INSERT INTO tt VALUES (1)")
    conn.flush()
    table = conn.session.engine.warehouse.catalog.load_table("public.tt")
    first = table.current_snapshot()
    time.sleep(0.01)
    cur.execute("INSERT INTO tt VALUES (2)")
    cur.execute("DELETE FROM tt WHERE a = 1")  # flushes the pending row first
    assert rows(cur, "SELECT a FROM tt") == [(2,)]
    assert rows(cur, f"SELECT a FROM tt FOR VERSION AS OF {first.snapshot_id}") == [(1,)]
    when = dt.datetime.fromtimestamp(first.timestamp_ms / 1000, dt.timezone.utc)
    assert rows(cur, f"SELECT a FROM tt FOR TIMESTAMP AS OF '{when.isoformat()}'") == [(1,)]
    with pytest.raises(E.InvalidParameterValue):
        cur.execute("SELECT a FROM tt FOR TIMESTAMP AS OF '2000-01-01 00:00:00'")
    assert rows(cur, "SELECT a FROM tt FOR VERSION AS OF 'main'") == [(2,)]


def test_plan_cache_reuses_plans_per_snapshot(conn, cur):
    cur.execute("CREATE TABLE pc (a INT)")
    cur.execute("INSERT INTO pc VALUES (1)")
    conn.flush()
    cache = conn.session.engine.plan_cache
    cur.execute("SELECT * FROM pc WHERE a = 1")
    misses = cache.misses
    cur.execute("SELECT * FROM pc WHERE a = 1")
    assert cache.misses == misses and cache.hits >= 1
    cur.execute("SELECT * FROM pc WHERE a = 7")  # a new value: pruned from the cached list
    assert cache.manifest_plans == 1 and cur.fetchall() == []
    cur.execute("INSERT INTO pc VALUES (2)")
    conn.flush()
    cur.execute("SELECT * FROM pc WHERE a = 1")
    assert cache.manifest_plans == 2 and cur.fetchall() == [(1,)]


def test_filters_prune_the_cached_file_list_as_pyiceberg_does(conn, cur):
    """Files pruned in memory from the snapshot's file list are exactly those pyiceberg's
    planner keeps for the filter: partitions (day) and column metrics."""
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    cur.execute("CREATE TABLE pr (ts TIMESTAMPTZ NOT NULL, k INT, v TEXT) "
                "WITH (time_column = 'ts', partition = 'day')")
    for day in range(1, 6):
        cur.execute(f"INSERT INTO pr VALUES ('2024-01-0{day} 10:00+00', {day * 10}, 'x{day}'), "
                    f"('2024-01-0{day} 11:00+00', {day * 10 + 5}, NULL)")
        conn.flush()
    table = conn.session.engine.warehouse.catalog.load_table("public.pr")
    snapshot = table.current_snapshot().snapshot_id
    cache = conn.session.engine.plan_cache
    filters = [EqualTo("k", 30), GreaterThanOrEqual("k", 35), LessThan("k", 0),
               And(GreaterThanOrEqual("ts", "2024-01-03T00:00:00+00:00"), LessThan("k", 45)),
               EqualTo("v", "x2")]
    kept = []
    for row_filter in filters:
        expected = {t.file.file_path for t in table.scan(row_filter=row_filter,
                                                         snapshot_id=snapshot).plan_files()}
        tasks, total = cache.plan(table, snapshot, row_filter)
        assert {t.file.file_path for t in tasks} == expected, row_filter
        assert total == 5
        kept.append(len(tasks))
    assert kept[0] == 1 and kept[2] == 0 and cache.manifest_plans == 1


QUERIES = [
    "SELECT g, count(*), sum(x), min(y), max(y) FROM r GROUP BY g ORDER BY g",
    "SELECT g, avg(x) FROM r WHERE x > 50 AND y < 0.5 GROUP BY g ORDER BY g",
    "SELECT count(*) FROM r a JOIN r b ON a.x = b.x AND a.g <> b.g",
    "SELECT x, y FROM r WHERE g IN ('a', 'c') AND x BETWEEN 10 AND 20 ORDER BY x, y LIMIT 20",
    "SELECT g, x, rank() OVER (PARTITION BY g ORDER BY x DESC, y) AS k FROM r ORDER BY g, k LIMIT 30",
    "SELECT count(DISTINCT x) FROM r WHERE s IS NULL",
    "WITH t AS (SELECT g, max(x) AS m FROM r GROUP BY g) SELECT r.g, count(*) FROM r JOIN t ON "
    "r.g = t.g AND r.x = t.m GROUP BY r.g ORDER BY r.g",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_results_match_duckdb(conn, sql):
    rng = np.random.default_rng(5)
    n = 3000
    data = pa.table({"g": rng.choice(["a", "b", "c", "d"], n), "x": rng.integers(0, 100, n),
                     "y": rng.random(n),
                     "s": pa.array([None if i % 3 else "s" for i in range(n)], pa.string())})
    conn.insert("r", data.slice(0, 1500), create=True)
    conn.insert("r", data.slice(1500))
    ours = conn.sql(sql).fetchall()
    reference = duckdb.connect().execute(sql.replace("FROM r", "FROM data")
                                         .replace("JOIN r", "JOIN data").replace("r.g", "data.g")
                                         .replace("r.x", "data.x")).fetchall()
    assert ours == [tuple(pytest.approx(v) if isinstance(v, float) else v for v in row)
                    for row in reference]


def test_nan_values_read_back_as_nan(conn, cur):
    import math
    cur.execute("CREATE TABLE nf (id INT, x DOUBLE PRECISION)")
    cur.execute("INSERT INTO nf VALUES (1, 0.5), (2, 'NaN'::double precision)")
    conn.flush()  # from the data file: its statistics say min = max = 0.5
    got = rows(cur, "SELECT id, x FROM nf ORDER BY id")
    assert got[0] == (1, 0.5) and got[1][0] == 2 and math.isnan(got[1][1])
    assert rows(cur, "SELECT id FROM nf WHERE isnan(x)") == [(2,)]


def test_same_column_twice(shop):
    assert rows(shop, "SELECT id, id FROM customers WHERE id = 1") == [(1, 1)]


def test_timestamptz_literal_without_zone_prunes_as_utc(conn):
    """Sessions run in UTC, so '2024-01-02 00:00:00' against a TIMESTAMPTZ column is pushed
    down as UTC (it used to be left out of the Iceberg filter) and gives the same rows."""
    conn.execute("CREATE TABLE ev (ts TIMESTAMPTZ, n INT)")
    conn.execute("INSERT INTO ev VALUES ('2024-01-01 12:00:00+00', 1)")
    conn.flush()
    conn.execute("INSERT INTO ev VALUES ('2024-01-03 12:00:00+00', 2)")
    conn.flush()
    query = "SELECT n FROM ev WHERE ts >= '2024-01-02 00:00:00'"
    assert conn.execute(query).fetchall() == [(2,)]
    plan = "\n".join(r[1] for r in conn.execute("EXPLAIN " + query).fetchall())
    assert "files=1/2" in plan


def test_fetch_first_is_a_limit(cur):
    cur.execute("CREATE TABLE f (a INT)")
    cur.execute("INSERT INTO f VALUES (5), (3), (1), (4), (2)")
    assert rows(cur, "SELECT a FROM f ORDER BY a FETCH FIRST 3 ROWS ONLY") == [(1,), (2,), (3,)]
    assert rows(cur, "SELECT a FROM f ORDER BY a OFFSET 1 ROWS FETCH NEXT 2 ROWS ONLY") == [(2,), (3,)]
    assert rows(cur, "SELECT a FROM f ORDER BY a DESC FETCH FIRST ROW ONLY") == [(5,)]
    with pytest.raises(E.NotSupportedError, match="PERCENT"):
        cur.execute("SELECT a FROM f FETCH FIRST 50 PERCENT ROWS ONLY")


def test_generate_series_in_the_select_list_gives_rows(cur):
    cur.execute("SELECT generate_series(1, 4)")
    assert cur.fetchall() == [(1,), (2,), (3,), (4,)]
    assert cur.description[0][0] == "generate_series"
    assert rows(cur, "SELECT 'x' AS k, generate_series(2, 3) AS n") == [("x", 2), ("x", 3)]
    cur.execute("CREATE TABLE g (a INT)")
    cur.execute("INSERT INTO g VALUES (1), (2)")
    assert rows(cur, "SELECT a, generate_series(1, a) FROM g ORDER BY 1, 2") == [(1, 1), (2, 1), (2, 2)]
