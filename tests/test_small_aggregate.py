"""Small GROUP BY statements answered from the column cache (engine/small_aggregate.py) give
the rows, names, types and field metadata DataFusion gives for the same statement: random
statements of the shapes it serves over data with NULLs in every column, held in two cached
files and the memtable; and what it declines still runs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnilake
from omnilake.engine import small_aggregate

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    def nulls(p=0.08):
        return rng.random(n) < p
    seconds = rng.integers(-600, 7200, n)
    return pa.table({
        "ts": pa.array([START + dt.timedelta(seconds=int(s)) for s in seconds],
                       pa.timestamp("us", "UTC"), mask=nulls()),
        "tag": pa.array(rng.choice(["a", "b", "c", "é"], n), pa.string(), mask=nulls()),
        "n": pa.array(rng.integers(-5, 6, n), pa.int64(), mask=nulls()),
        "k": pa.array(rng.integers(0, 4, n).astype(np.int32), pa.int32(), mask=nulls()),
        "x": pa.array(np.round(rng.normal(size=n), 3), pa.float64(), mask=nulls()),
    })


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    # (the memtable rows must stay there: a flush would add a file not cached yet)
    with omnilake.connect(str(tmp_path_factory.mktemp("wh")), flush_interval=86400) as connection:
        connection.sql("CREATE TABLE m (ts TIMESTAMPTZ, tag TEXT, n BIGINT, k INT, "
                       "x DOUBLE PRECISION)")
        for seed in (1, 2):  # two data files
            connection.insert("m", _rows(1500, seed))
            connection.flush("m")
        connection.insert("m", _rows(200, 3))  # and memtable rows
        for _ in range(2):  # a file's columns are cached from its second scan
            connection.sql("SELECT ts, tag, n, k, x FROM m").fetchall()
        yield connection


def both(monkeypatch, conn, sql):
    """(result here, result through DataFusion, whether this module answered)."""
    served, original = [], small_aggregate.answer

    def counted(session, tree, memo=None):
        found = original(session, tree, memo)
        served.append(found is not None)
        return found
    monkeypatch.setattr(small_aggregate, "answer", counted)
    fast = conn.session.execute(sql)[-1].table
    monkeypatch.setattr(small_aggregate, "answer", lambda session, tree, memo=None: None)
    general = conn.session.execute(sql)[-1].table
    monkeypatch.setattr(small_aggregate, "answer", original)
    return fast, general, any(served)


def check(monkeypatch, conn, sql, ordered: bool) -> bool:
    fast, general, served = both(monkeypatch, conn, sql)
    assert fast.schema.equals(general.schema, check_metadata=True), (sql, fast.schema,
                                                                      general.schema)
    if ordered:
        assert fast.to_pylist() == general.to_pylist(), sql
    else:
        assert sorted(fast.to_pylist(), key=repr) == sorted(general.to_pylist(), key=repr), sql
    return served


# -- random statements of the shapes served ------------------------------------------------
keys = st.sampled_from(["tag", "n", "k", "time_bucket('5 minutes', ts)",
                        "time_bucket('1 hour', ts)", "time_bucket('90 seconds', ts)"])
aggregates = st.sampled_from(["min(x)", "max(x)", "count(x)", "count(*)", "max(tag)",
                              "min(n)", "max(ts)", "min(ts)", "count(tag)", "max(k)"])
conditions = st.sampled_from([
    "tag = 'a'", "tag <> 'b'", "tag > 'a'", "tag = 'é'", "n > 0", "n <= -2", "k = 2",
    "x < 0.5", "x >= -1", "x > 1e-1", "ts >= '2026-01-01T00:30:00+00:00'",
    "ts < '2026-01-01 01:15:00'", "ts > '2026-01-01T01:00:00Z'", "n = -3", "k <> 1"])


@st.composite
def statements(draw):
    group = draw(st.lists(keys, min_size=1, max_size=2, unique=True))
    aggs = draw(st.lists(aggregates, min_size=1, max_size=3, unique=True))
    named = [(g, f"g{i}") for i, g in enumerate(group)] + [(a, f"a{i}") for i, a in enumerate(aggs)]
    if draw(st.booleans()):
        named = draw(st.permutations(named))
    aliased = draw(st.booleans())
    projections = [f"{e} AS {name}" if aliased else e for e, name in named]
    where = draw(st.lists(conditions, max_size=3, unique=True))
    how = draw(st.sampled_from(["position", "expression", "alias" if aliased else "position"]))
    positions = {e: i + 1 for i, (e, _) in enumerate(named)}
    group_by = [str(positions[g]) if how == "position" else
                dict(named)[g] if how == "alias" else g for g in group]
    sql = f"SELECT {', '.join(projections)} FROM m"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " GROUP BY " + ", ".join(group_by)
    order = draw(st.sampled_from(["none", "keys", "aggregate"]))
    ordered = False
    if order == "keys":  # group keys are unique per row: a total order
        entries = []
        for g in draw(st.permutations(group)):
            by_name = aliased and draw(st.booleans())
            entries.append((dict(named)[g] if by_name else str(positions[g])) + draw(st.sampled_from(
                ["", " ASC", " DESC", " DESC NULLS LAST", " ASC NULLS FIRST"])))
        sql += " ORDER BY " + ", ".join(entries)
        ordered = True
        if draw(st.booleans()):
            sql += f" LIMIT {draw(st.integers(0, 12))}"
    elif order == "aggregate":  # ties: compared as sets
        sql += f" ORDER BY {positions[aggs[0]]} DESC"
    names = [name if aliased else e.split("(")[0] for e, name in named]
    return sql, ordered, len(set(names)) == len(names)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statement=statements())
def test_random_statements_answer_as_datafusion(monkeypatch, conn, statement):
    sql, ordered, distinct_names = statement
    # every one of these is served here, but for twin output names (`min`, `min`), which
    # DataFusion needs renamed
    assert check(monkeypatch, conn, sql, ordered) == distinct_names, sql


# -- the panel query, and what is declined -------------------------------------------------
def test_dashboard_panel_is_served(monkeypatch, conn):
    sql = ("SELECT time_bucket('1 minute', ts) AS minute, max(x) AS m FROM m "
           "WHERE tag = 'a' AND ts >= '2026-01-01T00:10:00+00:00' AND ts < "
           "'2026-01-01T01:10:00+00:00' GROUP BY 1 ORDER BY 1")
    assert check(monkeypatch, conn, sql, ordered=True)
    fast, _, _ = both(monkeypatch, conn, sql)
    assert fast.num_rows > 30 and fast.column_names == ["minute", "m"]
    (line,) = [r[1] for r in conn.sql("EXPLAIN " + sql).fetchall()]
    assert line.startswith(f"SmallAggregate: columns=[minute, m] rows={fast.num_rows} ")
    assert "SmallAggregate" not in str(conn.sql("EXPLAIN SELECT tag, sum(x) FROM m GROUP BY tag")
                                       .fetchall())


@pytest.mark.parametrize("sql", [
    "SELECT tag, sum(x) FROM m GROUP BY tag",  # sums depend on the order of additions
    "SELECT tag, avg(n) FROM m GROUP BY tag",
    "SELECT tag, max(x) FROM m GROUP BY tag HAVING max(x) > 0",
    "SELECT tag, count(DISTINCT n) FROM m GROUP BY tag",
    "SELECT tag, max(x + 1) FROM m GROUP BY tag",
    "SELECT max(x) FROM m",  # no GROUP BY: one row even with no rows
    "SELECT tag, max(x) FROM m WHERE x > n GROUP BY tag",
    "SELECT tag, max(x) FROM m WHERE n IN (1, 2) GROUP BY tag",
    "SELECT tag, max(x) FROM m WHERE ts > now() GROUP BY tag",
    "SELECT tag, max(x) FROM m WHERE ts > 'yesterday' GROUP BY tag",
    "SELECT time_bucket('1 month', ts), count(*) FROM m GROUP BY 1",
    "SELECT date_bin(INTERVAL '1 hour', ts, '2000-01-01'), count(*) FROM m GROUP BY 1",
    "SELECT tag, n, max(x) FROM m GROUP BY tag",  # n is not grouped: DataFusion's error
    "SELECT n AS tag, max(x) FROM m GROUP BY tag",  # GROUP BY reads the column, not the alias
    "SELECT k, max(x) FROM m WHERE k = 3000000000 GROUP BY k",  # beyond INT
    "SELECT tag, max(x) FROM m GROUP BY ROLLUP (tag)",
    "SELECT tag, max(x) FROM m WHERE ts > '2026-01-01' GROUP BY tag",  # a date, not a time
    "SELECT tag, max(x) FROM m GROUP BY tag ORDER BY 2 LIMIT 2 OFFSET 1",
])
def test_other_statements_run_through_datafusion(monkeypatch, conn, sql):
    try:
        fast, general, served = both(monkeypatch, conn, sql)
    except omnilake.Error:
        return  # an error either way (the general path reports it)
    assert not served, sql
    # (DataFusion's own float sums differ from run to run in the last digits)
    def rounded(table):
        return sorted(([round(v, 9) if isinstance(v, float) else v for v in row.values()]
                       for row in table.to_pylist()), key=repr)
    assert rounded(fast) == rounded(general)


def test_nan_in_an_aggregated_column_goes_to_datafusion(monkeypatch, tmp_path):
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        conn.sql("CREATE TABLE f (tag TEXT, x DOUBLE PRECISION)")
        conn.insert("f", pa.table({"tag": ["a", "a", "b"], "x": [1.0, float("nan"), 2.0]}))
        conn.flush("f")
        for _ in range(2):
            conn.sql("SELECT tag, x FROM f").fetchall()
        fast, general, served = both(monkeypatch, conn, "SELECT tag, max(x) FROM f GROUP BY tag "
                                                        "ORDER BY tag")
        assert not served
        for table in (fast, general):  # DataFusion: NaN above every number
            assert table.column(0).to_pylist() == ["a", "b"]
            assert np.isnan(table.column(1)[0].as_py()) and table.column(1)[1].as_py() == 2.0
        # count does not look at the values: still served
        _, _, served = both(monkeypatch, conn, "SELECT tag, count(x) FROM f GROUP BY tag")
        assert served


def test_a_real_column_against_a_literal_goes_to_datafusion(monkeypatch, tmp_path):
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        conn.sql("CREATE TABLE f (tag TEXT, r REAL)")
        conn.insert("f", pa.table({"tag": ["a", "a", "b"], "r": pa.array([0.1, 0.2, 0.1], pa.float32())}))
        conn.flush("f")
        for _ in range(2):
            conn.sql("SELECT tag, r FROM f").fetchall()
        fast, general, served = both(monkeypatch, conn, "SELECT tag, count(*) FROM f WHERE r > 0.1 "
                                                        "GROUP BY tag ORDER BY tag")
        assert not served and fast.to_pylist() == general.to_pylist()
        assert check(monkeypatch, conn, "SELECT tag, max(r) FROM f GROUP BY tag",  # no literal
                     ordered=False)


def test_uncached_files_and_deletes_go_to_datafusion(monkeypatch, tmp_path):
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        conn.sql("CREATE TABLE d (tag TEXT, n BIGINT)")
        conn.insert("d", pa.table({"tag": ["a", "b", "a"], "n": [1, 2, 3]}))
        conn.flush("d")
        sql = "SELECT tag, max(n) FROM d GROUP BY tag ORDER BY tag"
        _, _, served = both(monkeypatch, conn, sql)
        assert not served  # the file is not cached yet (admitted on its second scan)
        conn.sql("SELECT tag, n FROM d").fetchall()
        fast, _, served = both(monkeypatch, conn, sql)
        assert served and fast.to_pylist() == [{"tag": "a", "max": 3}, {"tag": "b", "max": 2}]
        conn.sql("DELETE FROM d WHERE n = 3")
        conn.sql("INSERT INTO d VALUES ('c', 9)")
        fast, general, _ = both(monkeypatch, conn, sql)
        assert fast.to_pylist() == general.to_pylist() == [
            {"tag": "a", "max": 1}, {"tag": "b", "max": 2}, {"tag": "c", "max": 9}]


def test_inside_a_transaction_its_own_rows_count(monkeypatch, conn):
    conn.sql("BEGIN")
    try:
        conn.sql("INSERT INTO m VALUES ('2026-01-01T00:00:00+00:00', 'zz', 1, 1, 99.5)")
        fast, general, served = both(monkeypatch, conn,
                                     "SELECT tag, max(x) FROM m WHERE tag = 'zz' GROUP BY tag")
        assert served and fast.to_pylist() == general.to_pylist() == [{"tag": "zz", "max": 99.5}]
    finally:
        conn.sql("ROLLBACK")
    _, general, _ = both(monkeypatch, conn, "SELECT tag, max(x) FROM m WHERE tag = 'zz' GROUP BY tag")
    assert general.num_rows == 0


def test_many_rows_grouped_by_text_go_to_datafusion(monkeypatch, conn):
    """Arrow groups strings more slowly than DataFusion once thousands of rows are left."""
    monkeypatch.setattr(small_aggregate, "TEXT_KEY_ROWS", 100)
    assert not check(monkeypatch, conn, "SELECT tag, max(x) FROM m GROUP BY tag", ordered=False)
    assert check(monkeypatch, conn, "SELECT tag, max(x) FROM m WHERE n = 1 AND k = 1 "
                                    "AND tag = 'a' GROUP BY tag", ordered=False)
    # numbers and times as keys have no such limit
    assert check(monkeypatch, conn, "SELECT time_bucket('1 hour', ts), max(tag) FROM m GROUP BY 1",
                 ordered=False)


# -- first/last and the latest point of each series ------------------------------------------
def _points(n: int, seed: int, offset: int) -> pa.Table:
    """Readings in random order, every time distinct (first/last of tied times may pick
    either row, here as in DataFusion)."""
    rng = np.random.default_rng(seed)
    seconds = offset + rng.permutation(n) * 3
    return pa.table({
        "ts": pa.array([START + dt.timedelta(seconds=int(s)) for s in seconds],
                       pa.timestamp("us", "UTC")),
        "host": pa.array(rng.choice(["h0", "h1", "h2", "h3", "h4"], n), pa.string(),
                         mask=rng.random(n) < 0.05),
        "region": pa.array(rng.choice(["east", "west"], n), pa.string(),
                           mask=rng.random(n) < 0.05),
        "v": pa.array(np.round(rng.normal(size=n), 3), pa.float64(), mask=rng.random(n) < 0.1),
        "n": pa.array(rng.integers(-5, 6, n), pa.int64(), mask=rng.random(n) < 0.1),
    })


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A time series sorted by (host, region, ts) in two cached files, and memtable rows."""
    with omnilake.connect(str(tmp_path_factory.mktemp("wh")), flush_interval=86400) as connection:
        connection.sql("CREATE TABLE s (ts TIMESTAMPTZ NOT NULL, host TEXT, region TEXT, "
                       "v DOUBLE PRECISION, n BIGINT) WITH (time_column = 'ts', "
                       "tags = 'host, region')")
        for seed in (1, 2):
            connection.insert("s", _points(1500, seed, offset=seed))
            connection.flush("s")
        connection.insert("s", _points(200, 3, offset=0))  # (times ≡ 0 mod 3: still distinct)
        for _ in range(2):
            connection.sql("SELECT ts, host, region, v, n FROM s").fetchall()
        yield connection


series_keys = st.sampled_from([["host", "region"], ["region", "host"], ["host"], ["region"]])
time_aggregates = st.sampled_from(["max(ts)", "min(ts)", "last(v, ts)", "first(v, ts)",
                                   "last(n, ts)", "first(host, ts)", "last(ts, ts)"])
tag_conditions = st.sampled_from(["host = 'h1'", "host <> 'h2'", "region = 'west'",
                                  "host > 'h2'", "region <> 'east'"])


@st.composite
def latest_statements(draw):
    group = draw(series_keys)
    aggs = draw(st.lists(time_aggregates, min_size=0, max_size=3, unique=True))
    projections = group + [f"{a} AS a{i}" for i, a in enumerate(aggs)]
    where = draw(st.lists(tag_conditions, max_size=2, unique=True))
    other = draw(st.sampled_from([None, None, "n > 0", "max(v)"]))
    if other == "max(v)":
        projections.append("max(v) AS mv")
    elif other:
        where.append(other)
    sql = f"SELECT {', '.join(projections)} FROM s"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" GROUP BY {', '.join(group)} ORDER BY {', '.join(group)}"
    # Edges serve it when time never decreases within the runs they cut. Files are sorted by
    # (host, region, ts): a run of one host spans its regions, and time starts over in each;
    # a run of one region is one (host, region) run, as every host has every region (and
    # NULL), so it never continues into the next host's rows.
    keys = set(group) | {c.split()[0] for c in where}
    return sql, other is None and "region" in keys


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statement=latest_statements())
def test_latest_points_answer_as_datafusion(monkeypatch, series, statement):
    sql, by_edges = statement
    # with so few rows allowed, a statement is served only from the files' series edges
    monkeypatch.setattr(small_aggregate, "MAX_ROWS", 1000)
    assert check(monkeypatch, series, sql, ordered=True) == by_edges, sql


def test_first_and_last_over_all_rows_answer_as_datafusion(monkeypatch, series):
    for sql in ["SELECT host, last(v, ts) AS l, first(n, ts) AS f, count(*) FROM s "
                "WHERE v > 0 GROUP BY host ORDER BY host",
                "SELECT region, last(host, ts), max(ts) FROM s GROUP BY 1 ORDER BY 1",
                "SELECT time_bucket('10 minutes', ts) AS b, first(v, ts), last(v, ts) FROM s "
                "GROUP BY b ORDER BY b"]:
        assert check(monkeypatch, series, sql, ordered=True), sql


def test_lastpoint_is_served_from_series_edges(monkeypatch, series):
    sql = ("SELECT host, region, max(ts) AS t, last(v, ts) AS lv FROM s "
           "GROUP BY host, region ORDER BY host, region")
    monkeypatch.setattr(small_aggregate, "MAX_ROWS", 1000)
    assert check(monkeypatch, series, sql, ordered=True)
    fast, _, _ = both(monkeypatch, series, sql)
    assert fast.num_rows == 18  # (6 hosts with NULL) x (3 regions with NULL)
    (line,) = [r[1] for r in series.sql("EXPLAIN " + sql).fetchall()]
    assert line.startswith("SmallAggregate: columns=[host, region, t, lv] rows=18 ")
    # unnamed, first and last are named as in PostgreSQL
    fast, _, _ = both(monkeypatch, series, "SELECT host, region, first(v, ts), last(v, ts) FROM s "
                                           "GROUP BY host, region")
    assert fast.column_names == ["host", "region", "first", "last"]


def test_series_edges_over_many_chunks(monkeypatch, tmp_path):
    """A file of several cached chunks, some of which the zone maps rule out."""
    with omnilake.connect(str(tmp_path / "wh"), flush_interval=86400) as conn:
        conn.sql("CREATE TABLE p (ts TIMESTAMPTZ NOT NULL, host TEXT, v BIGINT) "
                 "WITH (time_column = 'ts', tags = 'host')")
        n = 40_000
        rng = np.random.default_rng(7)
        conn.insert("p", pa.table({
            "ts": pa.array([START + dt.timedelta(seconds=int(s)) for s in rng.permutation(n)],
                           pa.timestamp("us", "UTC")),
            "host": pa.array([f"h{i:02d}" for i in rng.integers(0, 40, n)]),
            "v": pa.array(np.arange(n))}))
        conn.flush("p")
        for _ in range(2):
            conn.sql("SELECT ts, host, v FROM p").fetchall()
        assert conn.session.engine.column_cache.stats()["files"] == 1
        monkeypatch.setattr(small_aggregate, "MAX_ROWS", 500)
        for sql in ["SELECT host, max(ts), last(v, ts), first(v, ts) FROM p GROUP BY host "
                    "ORDER BY host",
                    "SELECT host, last(v, ts) FROM p WHERE host >= 'h35' GROUP BY host ORDER BY 1"]:
            assert check(monkeypatch, conn, sql, ordered=True), sql


# -- statements kept by their text ---------------------------------------------------------
def test_a_statement_text_is_prepared_once_and_follows_the_table(monkeypatch, tmp_path):
    with omnilake.connect(str(tmp_path / "wh"), flush_interval=86400) as conn:
        conn.sql("CREATE TABLE d (tag TEXT, n BIGINT)")
        conn.insert("d", pa.table({"tag": ["a", "b", "a"], "n": [1, 2, 3]}))
        conn.flush("d")
        conn.sql("SELECT tag, n FROM d").fetchall()
        session, prepared = conn.session, []
        original = session.prepare
        monkeypatch.setattr(session, "prepare", lambda tree: prepared.append(1) or original(tree))
        sql = "SELECT tag, max(n) AS m FROM d GROUP BY tag ORDER BY tag"
        for _ in range(3):
            assert conn.sql(sql).fetchall() == [("a", 3), ("b", 2)]
        assert len(prepared) == 1
        conn.sql("INSERT INTO d VALUES ('b', 7)")  # memtable rows, then a new file
        assert conn.sql(sql).fetchall() == [("a", 3), ("b", 7)]
        conn.flush("d")
        assert conn.sql(sql).fetchall() == [("a", 3), ("b", 7)]
        conn.sql("ALTER TABLE d RENAME COLUMN n TO k")
        with pytest.raises(omnilake.Error) as info:
            conn.sql(sql)
        assert info.value.sqlstate == "42703"  # (as without the kept plan)
        assert conn.sql(sql.replace("max(n)", "max(k)")).fetchall() == [("a", 3), ("b", 7)]


def test_a_kept_text_reads_the_table_its_search_path_names(tmp_path):
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        for schema, value in (("s1", 1), ("s2", 2)):
            conn.sql(f"CREATE SCHEMA {schema}")
            conn.sql(f"CREATE TABLE {schema}.t (tag TEXT, n BIGINT)")
            conn.sql(f"INSERT INTO {schema}.t VALUES ('a', {value})")
        sql = "SELECT tag, max(n) FROM t GROUP BY tag"
        for schema, value in (("s1", 1), ("s2", 2), ("s1", 1)):
            conn.sql(f"SET search_path = {schema}")
            assert conn.sql(sql).fetchall() == [("a", value)]


@pytest.mark.parametrize("sql, kept", [
    ("SELECT tag, max(n) FROM d GROUP BY tag", True),
    ("SELECT time_bucket('1 hour', ts) AS h, last(n, ts) FROM d GROUP BY h", True),
    ("SELECT tag, max(n)::text FROM d GROUP BY tag", False),  # a cast
    ("SELECT current_user, count(*) FROM d GROUP BY 1", False),  # a value per session
    ("SELECT tag, max(n) FROM d WHERE n = %s GROUP BY tag", False),  # a parameter
    ("SELECT tag, upper(tag) FROM d GROUP BY tag", False),  # another function
    ("SELECT tag FROM d", False),  # no GROUP BY
    ("SELECT tag, max(n) FROM d GROUP BY tag; SELECT 1", False),
    ("SELECT tag, max(n FROM d GROUP BY tag", False),  # malformed
])
def test_which_texts_are_kept(tmp_path, sql, kept):
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        assert (conn.session.engine.text_plans.get(conn.session, sql) is not None) == kept


def test_other_statements_are_parsed_once(monkeypatch, tmp_path):
    """Looking for a kept text costs a statement that is not one no parse copy of its own (a
    new INSERT text each time would pay a second copy: ~7.6 ms for 300 rows)."""
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        conn.sql("CREATE TABLE d (tag TEXT, n BIGINT)")
        session, copies = conn.session, []
        original = session.parse
        monkeypatch.setattr(session, "parse", lambda sql: copies.append(sql) or original(sql))
        for sql in ["INSERT INTO d VALUES ('a', 1), ('b', 2)",
                    "SELECT tag, n FROM d WHERE n > 0",
                    "SELECT tag, n + 1 FROM d GROUP BY tag, n"]:  # a GROUP BY that is not kept
            copies.clear()
            conn.sql(sql)
            assert copies == [sql], sql
