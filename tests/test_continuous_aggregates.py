"""Continuous aggregates: after many small (late, out-of-order) inserts and incremental
refreshes the view equals the query recomputed from scratch; only touched buckets are
recomputed; retention, background refresh, reopen, errors."""

import datetime as dt
import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnilake
from omnilake import errors as E
from omnilake.engine.continuous_aggregates import refresh

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
VIEW_QUERY = ("SELECT time_bucket('{interval}', ts) AS bucket, host, avg(v) AS mean, "
              "count(*) AS n, max(v) AS top, first(v, ts) AS opening, last(v, ts) AS closing "
              "FROM m GROUP BY 1, 2")
_names = itertools.count()


def normalised(result):
    return sorted((b.astimezone(dt.timezone.utc), h, round(a, 9) if a is not None else None, n,
                   t, o, c) for b, h, a, n, t, o, c in result)


def scratch(conn, interval):
    return normalised(conn.sql(VIEW_QUERY.format(interval=interval)).fetchall())


def view(conn, name="agg"):
    return normalised(conn.sql(f"SELECT bucket, host, mean, n, top, opening, closing FROM {name}")
                      .fetchall())


def insert(conn, batch):
    values = ", ".join(f"('{(T0 + dt.timedelta(seconds=s)).isoformat()}', '{h}', {v})"
                       for s, h, v in batch)
    conn.sql(f"INSERT INTO m VALUES {values}")


def make_source(conn):
    conn.sql("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
             "WITH (time_column = 'ts', tags = 'host', partition = 'day')")


batches = st.lists(st.lists(st.tuples(st.integers(0, 5 * 86400), st.sampled_from("abc"),
                                      st.integers(-100, 100)), min_size=1, max_size=4),
                   min_size=3, max_size=12)


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, interval=st.sampled_from(["1 hour", "1 day", "90 minutes", "1 week"]),
       refresh_every=st.integers(1, 3))
def test_view_equals_recompute_after_many_small_inserts(tmp_path, batches, interval,
                                                        refresh_every):
    seen = set()  # unique times per host keep first()/last() well defined
    batches = [[p for p in batch if (p[0], p[1]) not in seen and not seen.add((p[0], p[1]))]
               for batch in batches]
    batches = [b for b in batches if b]
    with omnilake.connect(str(tmp_path / f"wh{next(_names)}"), timeseries_interval=0) as conn:
        make_source(conn)
        insert(conn, batches[0])
        conn.sql(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval=interval)}")
        assert view(conn) == scratch(conn, interval)
        for i, batch in enumerate(batches[1:], start=1):
            insert(conn, batch)
            if i % refresh_every == 0:
                conn.sql("REFRESH MATERIALIZED VIEW agg")
                assert view(conn) == scratch(conn, interval)
        conn.sql("REFRESH MATERIALIZED VIEW agg")
        assert view(conn) == scratch(conn, interval)


def test_refresh_recomputes_only_touched_buckets(conn):
    make_source(conn)
    insert(conn, [(h * 3600 + 60, "a", h) for h in range(48)])
    conn.sql(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval='1 hour')}")
    session = conn.session
    assert refresh(session, "public", "agg") == 0  # nothing new
    insert(conn, [(5 * 3600 + 30, "b", 7)])  # a late point in hour 5
    assert refresh(session, "public", "agg") == 1
    insert(conn, [(3600 + 1, "a", 1), (7 * 3600 + 1, "c", 2)])  # hours 1 .. 7
    assert refresh(session, "public", "agg") == 7
    assert view(conn) == scratch(conn, "1 hour")
    assert len(view(conn)) == 50
    conn.sql("OPTIMIZE m")  # rewrites files, not rows: nothing to recompute
    assert refresh(session, "public", "agg") == 0
    assert view(conn) == scratch(conn, "1 hour")


def test_the_view_outlives_retention_on_its_source_and_reopen(warehouse):
    recent = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    with omnilake.connect(warehouse, timeseries_interval=0) as conn:
        make_source(conn)
        insert(conn, [(d * 86400 + 10, "a", d) for d in range(5)])
        conn.flush()
        conn.sql(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval='1 day')}")
        before = view(conn)
        assert len(before) == 5
        conn.sql("SELECT drop_chunks('m', INTERVAL '1 day')")
        assert conn.sql("SELECT count(*) FROM m").fetchall() == [(0,)]  # all of 2024-01 is old
    with omnilake.connect(warehouse, timeseries_interval=0) as conn:
        conn.sql("REFRESH MATERIALIZED VIEW agg")
        assert view(conn) == before  # the aggregates of dropped partitions are kept
        insert(conn, [(2 * 86400 + 99, "late", 1)])  # late data for a dropped bucket: ignored
        conn.sql(f"INSERT INTO m VALUES ('{recent.isoformat()}', 'new', 7)")
        conn.sql("REFRESH MATERIALIZED VIEW agg")
        got = view(conn)
        assert got[:5] == before
        assert [r[1:] for r in got[5:]] == [("new", 7.0, 1, 7, 7, 7)]
        # above the floor the view is the query: everything dropped or late is below it
        floor = dt.datetime(2024, 1, 6, tzinfo=dt.timezone.utc)
        assert got[5:] == [r for r in scratch(conn, "1 day") if r[0] >= floor]


def test_background_refresh(warehouse):
    with omnilake.connect(warehouse, timeseries_interval=0.2, flush_interval=0.2) as conn:
        make_source(conn)
        insert(conn, [(10, "a", 1)])
        conn.sql(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval='1 hour')}")
        insert(conn, [(20, "a", 5), (7200, "b", 3)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and view(conn) != scratch(conn, "1 hour"):
            time.sleep(0.1)
        assert view(conn) == scratch(conn, "1 hour") and len(view(conn)) == 2


@pytest.mark.parametrize("query, sqlstate", [
    ("SELECT host, avg(v) FROM m GROUP BY host", "0A000"),
    ("SELECT time_bucket('1 hour', ts) AS b, avg(v) FROM m", "0A000"),
    ("SELECT time_bucket('1 hour', m.ts) AS b, avg(m.v) FROM m JOIN m AS o ON m.ts = o.ts "
     "GROUP BY 1", "0A000"),
    ("SELECT time_bucket('1 fortnight', ts) AS b, avg(v) FROM m GROUP BY 1", "22007"),
    ("SELECT time_bucket('1 hour', ts) AS b, avg(v) FROM nope GROUP BY 1", "42P01"),
    ("SELECT time_bucket('1 hour', ts) AS b, avg(v) AS b FROM m GROUP BY 1", "42701"),
    ("SELECT time_bucket('1 hour', ts) AS b, avg(v) FROM m GROUP BY 1 LIMIT 3", "0A000"),
])
def test_bad_views(conn, query, sqlstate):
    make_source(conn)
    with pytest.raises(E.Error) as info:
        conn.sql(f"CREATE MATERIALIZED VIEW bad AS {query}")
    assert info.value.sqlstate == sqlstate
    assert conn.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'bad'") \
        .fetchall() == [(0,)]


def test_refresh_and_drop_errors(conn):
    make_source(conn)
    conn.sql(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval='1 hour')}")
    with pytest.raises(E.DuplicateTable):
        conn.sql(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval='1 hour')}")
    conn.sql(f"CREATE MATERIALIZED VIEW IF NOT EXISTS agg AS {VIEW_QUERY.format(interval='1 hour')}")
    for statement, sqlstate in [("REFRESH MATERIALIZED VIEW m", "42809"),
                                ("REFRESH MATERIALIZED VIEW nope", "42P01"),
                                ("DROP MATERIALIZED VIEW m", "42809"),
                                ("DROP MATERIALIZED VIEW nope", "42P01")]:
        with pytest.raises(E.Error) as info:
            conn.sql(statement)
        assert info.value.sqlstate == sqlstate, statement
    conn.sql("DROP TABLE m")
    with pytest.raises(E.UndefinedTable):
        conn.sql("REFRESH MATERIALIZED VIEW agg")
    conn.sql("DROP MATERIALIZED VIEW agg")
    conn.sql("DROP MATERIALIZED VIEW IF EXISTS agg")
    assert conn.sql("SELECT count(*) FROM information_schema.tables").fetchall() == [(0,)]


def test_command_tags(conn):
    make_source(conn)
    insert(conn, [(10, "a", 1), (7200, "b", 2)])
    cur = conn.cursor()
    cur.execute(f"CREATE MATERIALIZED VIEW agg AS {VIEW_QUERY.format(interval='1 hour')}")
    assert (cur.statusmessage, cur.rowcount) == ("SELECT 2", 2)
    cur.execute("REFRESH MATERIALIZED VIEW agg")
    assert cur.statusmessage == "REFRESH MATERIALIZED VIEW"
    cur.execute("DROP MATERIALIZED VIEW agg")
    assert cur.statusmessage == "DROP MATERIALIZED VIEW"
