"""time_bucket_gapfill with locf() and interpolate() against a reference: DuckDB makes the
buckets and the grid (time_bucket, generate_series), plain Python does the filling."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnilake
from omnilake import errors as E

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
MICROS = dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def mconn():
    with omnilake.connect() as connection:
        yield connection


def as_naive(value):
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def reference(points, interval, start, finish):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    inside = [p for p in points if start <= p[0] < finish]
    data = pa.table({"ts": pa.array([as_naive(p[0]) for p in inside], pa.timestamp("us")),
                     "host": [p[1] for p in inside], "v": pa.array([p[2] for p in inside],
                                                                   pa.float64())})
    con.register("d", data)
    grouped = con.execute(f"SELECT time_bucket(INTERVAL '{interval}', ts) b, host, avg(v) "
                          "FROM d GROUP BY ALL").fetchall()
    grid = [r[0] for r in con.execute(
        f"SELECT unnest(generate_series(time_bucket(INTERVAL '{interval}', TIMESTAMP "
        f"'{as_naive(start)}'), TIMESTAMP '{as_naive(finish)}' - INTERVAL '1 microsecond', "
        f"INTERVAL '{interval}'))").fetchall()]
    values = {(b, h): a for b, h, a in grouped}
    out = []
    for host in sorted({h for _, h in values}):
        series = [(b, values.get((b, host))) for b in grid]
        known = [(b, v) for b, v in series if v is not None]
        last = None
        for b, v in series:
            last = v if v is not None else last
            before = [(kb, kv) for kb, kv in known if kb <= b]
            after = [(kb, kv) for kb, kv in known if kb >= b]
            interp = None
            if v is not None:
                interp = v
            elif before and after:
                (b0, v0), (b1, v1) = before[-1], after[0]
                interp = v0 + (v1 - v0) * ((b - b0) / MICROS) / ((b1 - b0) / MICROS)
            out.append((b, host, v, last, interp))
    return out


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=st.lists(st.tuples(st.integers(0, 3 * 86400), st.sampled_from(["a", "b", "c"]),
                                 st.floats(-1000, 1000, allow_nan=False)),
                       min_size=1, max_size=30, unique_by=lambda p: (p[0], p[1])),
       interval=st.sampled_from(["15 minutes", "1 hour", "3 hours", "1 day"]),
       window=st.tuples(st.integers(0, 86400), st.integers(3600, 2 * 86400)))
def test_gapfill_locf_interpolate_match_reference(mconn, points, interval, window):
    points = [(T0 + dt.timedelta(seconds=s), h, v) for s, h, v in points]
    start = T0 + dt.timedelta(seconds=window[0])
    finish = start + dt.timedelta(seconds=window[1])
    mconn.register("pts", pa.table({
        "ts": pa.array([p[0] for p in points], pa.timestamp("us", "UTC")),
        "host": [p[1] for p in points], "v": pa.array([p[2] for p in points], pa.float64())}))
    got = mconn.sql(
        f"SELECT time_bucket_gapfill('{interval}', ts) AS b, host, avg(v), locf(avg(v)), "
        f"interpolate(avg(v)) FROM pts WHERE ts >= '{start.isoformat()}' "
        f"AND ts < '{finish.isoformat()}' GROUP BY b, host ORDER BY host, b").fetchall()
    expected = reference(points, interval, start, finish)
    assert [(as_naive(r[0]), r[1]) for r in got] == [(r[0], r[1]) for r in expected]
    for row, ref in zip(got, expected):
        assert all(close(x, y) for x, y in zip(row[2:], ref[2:])), (row, ref)


def test_gapfill_on_a_table_with_arguments_order_and_limit(conn):
    conn.sql("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
             "WITH (time_column = 'ts', tags = 'host')")
    conn.sql("INSERT INTO m VALUES ('2024-01-01 00:10:00+00', 'a', 2), "
             "('2024-01-01 03:50:00+00', 'a', 8), ('2024-01-01 01:00:00+00', 'b', 5)")
    got = conn.sql("SELECT host, time_bucket_gapfill('1 hour', ts, '2024-01-01 00:00:00+00', "
                   "'2024-01-01 05:00:00+00') AS hour, sum(v) AS total, locf(sum(v)) AS carried, "
                   "interpolate(sum(v)) AS line FROM m GROUP BY host, hour "
                   "ORDER BY host DESC, hour LIMIT 6").fetchall()
    hours = [T0 + dt.timedelta(hours=h) for h in range(5)]
    assert [(h, r[1].astimezone(dt.timezone.utc)) for h, r in zip(["b"] * 5 + ["a"], got)] == \
        [(r[0], r[1].astimezone(dt.timezone.utc)) for r in got]
    assert [(r[2], r[3], r[4]) for r in got] == [
        (None, None, None), (5, 5, 5.0), (None, 5, None), (None, 5, None), (None, 5, None),
        (2, 2, 2.0)]
    assert [r[1].astimezone(dt.timezone.utc) for r in got[:5]] == hours
    a = conn.sql("SELECT time_bucket_gapfill('1 hour', ts) AS hour, interpolate(sum(v)) FROM m "
                 "WHERE host = 'a' AND ts BETWEEN '2024-01-01 00:00:00+00' AND "
                 "'2024-01-01 04:59:59+00' GROUP BY 1 ORDER BY 1").fetchall()
    assert [r[1] for r in a] == [2.0, 4.0, 6.0, 8.0, None]


@pytest.mark.parametrize("query, sqlstate", [
    ("SELECT time_bucket_gapfill('1 hour', ts), avg(v) FROM m GROUP BY 1", "22023"),
    ("SELECT time_bucket_gapfill('1 hour', ts) FROM m WHERE ts >= '2024-01-01 00:00:00+00' "
     "GROUP BY 1", "22023"),
    ("SELECT time_bucket_gapfill('1 bananas', ts, '2024-01-01', '2024-01-02') FROM m GROUP BY 1",
     "22007"),
    ("SELECT time_bucket_gapfill('1 hour', ts, '2024-01-02', '2024-01-01') FROM m GROUP BY 1",
     "22023"),
    ("SELECT time_bucket_gapfill('1 hour', ts, 'yesterday', '2024-01-01') FROM m GROUP BY 1",
     "22007"),
    ("SELECT time_bucket_gapfill('1 second', ts, '2000-01-01', '2024-01-01') FROM m GROUP BY 1",
     "54000"),
])
def test_gapfill_errors(conn, query, sqlstate):
    conn.sql("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, v INT)")
    conn.sql("INSERT INTO m VALUES ('2024-01-01 00:10:00+00', 1)")
    with pytest.raises(E.Error) as info:
        conn.sql(query)
    assert info.value.sqlstate == sqlstate


def test_gapfill_with_first_last_and_rate(conn):
    conn.sql("CREATE TABLE c (ts TIMESTAMPTZ NOT NULL, v INT)")
    conn.sql("INSERT INTO c VALUES ('2024-01-01 00:00:00+00', 10), ('2024-01-01 00:30:00+00', 16), "
             "('2024-01-01 02:00:00+00', 20), ('2024-01-01 02:10:00+00', 50)")
    got = conn.sql("SELECT time_bucket_gapfill('1 hour', ts, '2024-01-01 00:00:00+00', "
                   "'2024-01-01 03:00:00+00') AS h, first(v, ts), locf(last(v, ts)), "
                   "rate(v, ts) FROM c GROUP BY 1 ORDER BY 1").fetchall()
    assert [r[1:] for r in got] == [(10, 16, 6 / 1800), (None, 16, None), (20, 50, 30 / 600)]


def test_gapfill_leaves_out_rows_without_time(conn):
    conn.sql("CREATE TABLE n (ts TIMESTAMPTZ, v INT)")
    conn.sql("INSERT INTO n VALUES ('2024-01-01 00:10:00+00', 1), (NULL, 5), "
             "('2024-01-01 02:10:00+00', 3)")
    got = conn.sql("SELECT time_bucket_gapfill('1 hour', ts, '2024-01-01 00:00:00+00', "
                   "'2024-01-01 03:00:00+00'), sum(v), interpolate(sum(v)) FROM n GROUP BY 1 "
                   "ORDER BY 1").fetchall()
    assert [r[1:] for r in got] == [(1, 1.0), (None, 2.0), (3, 3.0)]
