"""time_bucket, date_bin, first/last, delta/increase/rate against independent references:
DuckDB's time_bucket (TimescaleDB semantics) and plain Python over the same rows."""

import datetime as dt
import math

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnilake
from omnilake import errors as E

from conftest import rows

EPOCH = dt.datetime(1970, 1, 1)
INTERVALS = ["1 second", "7 minutes", "1 hour", "90 minutes", "1 day", "3 days", "1 week",
             "1 month", "3 months", "1 year"]
HOSTS = ["a", "b", "c"]
LOW, HIGH = 631152000 * 10**6, 2208988800 * 10**6  # 1990 .. 2040, in microseconds


@pytest.fixture(scope="module")
def mconn():
    with omnilake.connect() as connection:
        yield connection


def points():
    return st.lists(st.tuples(st.integers(LOW, HIGH), st.sampled_from(HOSTS),
                              st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))),
                    min_size=1, max_size=40, unique_by=lambda p: p[0])


def arrow(data):
    return pa.table({"ts": pa.array([p[0] for p in data], pa.timestamp("us", "UTC")),
                     "host": pa.array([p[1] for p in data], pa.string()),
                     "v": pa.array([p[2] for p in data], pa.float64())})


def naive(micros):
    return EPOCH + dt.timedelta(microseconds=micros)


def duck_buckets(data, interval, origin=None):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = pa.table({"ts": pa.array([p[0] for p in data], pa.timestamp("us"))})
    con.register("d", table)
    origin_sql = ""
    if origin:
        origin_sql = f", TIMESTAMP '{origin}'" if origin[4:5] == "-" else f", INTERVAL '{origin}'"
    out = con.execute(f"SELECT time_bucket(INTERVAL '{interval}', ts{origin_sql}) FROM d").fetchall()
    return [r[0] for r in out]


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=points(), interval=st.sampled_from(INTERVALS),
       origin=st.one_of(st.none(), st.sampled_from(["2001-02-03 04:05:06", "1985-06-01 00:00:00",
                                                   "2030-12-01 12:00:00", "-15 minutes",
                                                   "3 hours", "2 days", "1 month"])))
def test_time_bucket_matches_duckdb(mconn, data, interval, origin):
    """origin: a timestamp, or an offset interval."""
    mconn.register("pts", arrow(data))
    origin_sql = ""
    if origin:
        origin_sql = f", '{origin}+00'" if origin[4:5] == "-" else f", INTERVAL '{origin}'"
    got = [r[0] for r in mconn.sql(f"SELECT time_bucket('{interval}', ts{origin_sql}) FROM pts")
           .fetchall()]
    expected = duck_buckets(data, interval, origin)
    assert [g.replace(tzinfo=None) for g in got] == expected


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=points(), stride=st.sampled_from(["15 minutes", "1 hour", "1 day", "5 seconds"]))
def test_date_bin_floors_from_origin(mconn, data, stride):
    mconn.register("pts", arrow(data))
    got = mconn.sql(f"SELECT ts, date_bin(INTERVAL '{stride}', ts, TIMESTAMPTZ '2001-01-01 00:30:00+00') "
                    "FROM pts").fetchall()
    step = {"15 minutes": 900, "1 hour": 3600, "1 day": 86400, "5 seconds": 5}[stride] * 10**6
    origin = (dt.datetime(2001, 1, 1, 0, 30) - EPOCH) // dt.timedelta(microseconds=1)
    for ts, binned in got:
        micros = (ts.replace(tzinfo=None) - EPOCH) // dt.timedelta(microseconds=1)
        assert binned.replace(tzinfo=None) == naive(origin + (micros - origin) // step * step)


def reference_aggregates(data, interval):
    """Per (bucket, host): first, last, delta, increase, rate, computed in plain Python."""
    buckets = dict(zip([p[0] for p in data], duck_buckets(data, interval)))
    groups = {}
    for ts, host, v in sorted(data):
        groups.setdefault((buckets[ts], host), []).append((ts, v))
    out = {}
    for key, samples in groups.items():
        present = [(t, v) for t, v in samples if v is not None]
        delta = increase = rate = None
        if len(present) >= 2:
            delta = present[-1][1] - present[0][1]
            increase = 0.0
            for (_, a), (_, b) in zip(present, present[1:]):
                increase += b - a if b >= a else b
            rate = increase / ((present[-1][0] - present[0][0]) / 1e6)
        out[key] = (samples[0][1], samples[-1][1], delta, increase, rate)
    return out


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=points(), interval=st.sampled_from(INTERVALS))
def test_first_last_delta_rate_match_reference(mconn, data, interval):
    mconn.register("pts", arrow(data))
    got = mconn.sql(f"SELECT time_bucket('{interval}', ts) AS b, host, first(v, ts), last(v, ts), "
                    "delta(v, ts), increase(v, ts), rate(v, ts) FROM pts GROUP BY 1, 2").fetchall()
    expected = reference_aggregates(data, interval)
    assert len(got) == len(expected)
    for b, host, *values in got:
        ref = expected[(b.replace(tzinfo=None), host)]
        assert all(close(x, y) for x, y in zip(values, ref)), (values, ref)


def test_late_and_out_of_order_points_on_a_time_series_table(conn, cur):
    cur.execute("CREATE TABLE cpu (ts TIMESTAMPTZ NOT NULL, host TEXT, usage DOUBLE PRECISION) "
                "WITH (time_column = 'ts', tags = 'host', partition = 'hour')")
    cur.execute("INSERT INTO cpu VALUES ('2024-03-01 10:20:00+00', 'a', 3), "
                "('2024-03-01 10:05:00+00', 'a', 1), ('2024-03-01 11:01:00+00', 'b', 7)")
    conn.flush()
    # late points for an hour already flushed, out of order, in a second batch (memtable)
    cur.execute("INSERT INTO cpu VALUES ('2024-03-01 10:59:00+00', 'a', 9), "
                "('2024-03-01 10:00:00+00', 'a', 0.5), ('2024-03-01 09:30:00+00', 'b', 4)")
    query = ("SELECT time_bucket('1 hour', ts) AS hour, host, first(usage, ts), last(usage, ts), "
             "count(*) FROM cpu GROUP BY 1, 2 ORDER BY 1, 2")
    expected = [(dt.datetime(2024, 3, 1, 9, tzinfo=dt.timezone.utc), "b", 4.0, 4.0, 1),
                (dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone.utc), "a", 0.5, 9.0, 4),
                (dt.datetime(2024, 3, 1, 11, tzinfo=dt.timezone.utc), "b", 7.0, 7.0, 1)]
    assert [(h.astimezone(dt.timezone.utc), *r) for h, *r in rows(cur, query)] == expected
    conn.flush()
    assert [(h.astimezone(dt.timezone.utc), *r) for h, *r in rows(cur, query)] == expected
    table = conn.session.engine.warehouse.catalog.load_table("public.cpu")
    partitions = sorted(t.file.partition[0] for t in table.scan().plan_files())
    hour = (dt.datetime(2024, 3, 1, 10) - EPOCH) // dt.timedelta(hours=1)
    assert partitions == [hour - 1, hour, hour, hour + 1]  # the late hour-10 rows: a new file


def test_time_series_table_layout_and_pruning(conn, cur):
    cur.execute("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, site TEXT, host TEXT, v INT) "
                "WITH (time_column = 'ts', tags = 'site, host', partition = 'day', "
                "retention = '30 days')")
    table = conn.session.engine.warehouse.catalog.load_table("public.m")
    assert [str(f.transform) for f in table.spec().fields] == ["day"]
    assert [f.source_id for f in table.sort_order().fields] == [2, 3, 1]
    cur.execute("INSERT INTO m VALUES ('2024-01-02 10:00:00+00', 's', 'h2', 1), "
                "('2024-01-01 10:00:00+00', 's', 'h1', 2), ('2024-01-02 09:00:00+00', 's', 'h1', 3)")
    conn.flush()
    plan = rows(cur, "EXPLAIN SELECT * FROM m WHERE ts >= '2024-01-02 00:00:00+00'")[0][1]
    assert "files=1/2 pruned=1" in plan
    # files are written in the sort order: tags, then time
    (task,) = [t for t in table.refresh().scan().plan_files() if t.file.record_count == 2]
    import pyarrow.parquet as pq
    written = pq.read_table(task.file.file_path.removeprefix("file://"))
    assert written.column("host").to_pylist() == ["h1", "h2"]


@pytest.mark.parametrize("options, sqlstate", [
    ("(time_column = 'nope')", "42703"),
    ("(time_column = 'host')", "42804"),
    ("(tags = 'host')", "22023"),
    ("(time_column = 'ts', partition = 'week')", "22023"),
    ("(time_column = 'ts', retention = '5 bananas')", "22007"),
    ("(time_column = 'ts', retention = '-1 day')", "22023"),
    ("(time_column = 'ts', tags = 'missing')", "42703"),
    ("(time_column = 'ts', colour = 'red')", "22023"),
])
def test_bad_time_series_options(cur, options, sqlstate):
    with pytest.raises(E.Error) as info:
        cur.execute(f"CREATE TABLE bad (ts TIMESTAMPTZ NOT NULL, host TEXT) WITH {options}")
    assert info.value.sqlstate == sqlstate
    assert rows(cur, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'bad'") \
        == [(0,)]


@pytest.mark.parametrize("call, sqlstate", [
    ("time_bucket('5 bananas', ts)", "22007"),
    ("time_bucket('1 month 2 days', ts)", "0A000"),
    ("time_bucket(host, ts)", "0A000"),
    ("time_bucket('0 minutes', ts)", "22023"),
    ("time_bucket('1 hour')", "42883"),
    ("rate(v)", "42883"),
])
def test_bad_function_calls(mconn, call, sqlstate):
    mconn.register("pts", arrow([(LOW, "a", 1.0)]))
    with pytest.raises(E.Error) as info:
        mconn.sql(f"SELECT {call} FROM pts")
    assert info.value.sqlstate == sqlstate


def test_integer_time_bucket(mconn):
    mconn.register("ints", pa.table({"n": [-11, -10, -1, 0, 9, 10, 25]}))
    assert [r[0] for r in mconn.sql("SELECT time_bucket(10, n) FROM ints").fetchall()] == \
        [-20, -10, -10, 0, 0, 10, 20]


@pytest.mark.parametrize("text, months, micros", [
    ("5 minutes", 0, 300_000_000), ("1 hour 30 minutes", 0, 5_400_000_000),
    ("01:30:00", 0, 5_400_000_000), ("-00:00:01.5", 0, -1_500_000), ("1.5 hours", 0, 5_400_000_000),
    ("2 weeks", 0, 14 * 86_400_000_000), ("@ 1 day", 0, 86_400_000_000), ("15m", 0, 900_000_000),
    ("250 ms", 0, 250_000), ("3 months", 3, 0), ("1 year 2 mons", 14, 0), ("1 DAY", 0, 86_400_000_000),
])
def test_interval_parsing(text, months, micros):
    from omnilake.catalog.table_options import parse_interval
    assert (parse_interval(text).months, parse_interval(text).micros) == (months, micros)


@pytest.mark.parametrize("text", ["", "5", "five minutes", "1.5 months", "5 minutes ago x", "1:2:3:4"])
def test_bad_intervals(text):
    from omnilake.catalog.table_options import parse_interval
    with pytest.raises(E.DataError) as info:
        parse_interval(text)
    assert info.value.sqlstate == "22007"


def test_an_unnamed_time_bucket_column_is_called_time_bucket(tmp_path):
    import omnilake
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE r (ts TIMESTAMPTZ, v INT)")
        cur.execute("INSERT INTO r VALUES ('2026-01-01T00:10:00Z', 1), ('2026-01-01T01:10:00Z', 2)")
        cur.execute("SELECT time_bucket('1 hour', ts), sum(v) FROM r "
                    "GROUP BY time_bucket('1 hour', ts) ORDER BY time_bucket('1 hour', ts)")
        assert [d[0] for d in cur.description] == ["time_bucket", "sum"]
        assert [r[1] for r in cur.fetchall()] == [1, 2]
        cur.execute("SELECT time_bucket(10, v) AS b FROM r")  # a name given stays
        assert [d[0] for d in cur.description] == ["b"]


def test_unnamed_first_and_last_columns_are_called_first_and_last(tmp_path):
    import omnilake
    with omnilake.connect(str(tmp_path / "wh")) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE r (ts TIMESTAMPTZ, v INT)")
        cur.execute("INSERT INTO r VALUES ('2026-01-01T00:10:00Z', 1), ('2026-01-01T01:10:00Z', 2)")
        cur.execute("SELECT first(v, ts), last(v, ts), last(v, ts) FROM r")
        assert [d[0] for d in cur.description] == ["first", "last", "last"]
        assert cur.fetchall() == [(1, 2, 2)]
        cur.execute("SELECT last(v, ts) + 1, last(v, ts) AS l FROM r")  # not a column itself
        assert [d[0] for d in cur.description] == ["?column?", "l"]
