"""Retention: expired partitions are dropped as metadata (no data file rewritten), exactly
those whose whole time range is older than the window; on demand and in the background."""

import datetime as dt
import time

import pytest

import omnilake
from omnilake import errors as E
from omnilake.engine.retention import drop_expired

from conftest import rows

NOW = dt.datetime.now(dt.timezone.utc)


def ts(days_ago: float, hours: float = 0) -> str:
    return (NOW - dt.timedelta(days=days_ago, hours=hours)).isoformat()


def data_files(conn, name):
    table = conn.session.engine.warehouse.catalog.load_table(f"public.{name}")
    return {t.file.file_path: (t.file.partition[0], t.file.record_count)
            for t in table.scan().plan_files()}


def fill(conn, name, ages):
    """One flush per age, so every partition has its own file(s)."""
    for age in ages:
        conn.sql(f"INSERT INTO {name} VALUES ('{ts(age)}', 'h', {age})")
        conn.flush()


def test_drop_chunks_drops_exactly_the_expired_partitions_without_rewriting(conn, cur):
    cur.execute("CREATE TABLE cpu (ts TIMESTAMPTZ NOT NULL, host TEXT, v DOUBLE PRECISION) "
                "WITH (time_column = 'ts', tags = 'host', partition = 'day', retention = '10 days')")
    ages = [40, 30, 12, 11, 10.2, 9, 2, 0]
    fill(conn, "cpu", ages)
    conn.sql(f"INSERT INTO cpu VALUES ('{ts(35)}', 'h', 35)")  # pending in the memtable
    before = data_files(conn, "cpu")
    cutoff = NOW - dt.timedelta(days=10)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    expired_days = {d for d, _ in before.values()
                    if epoch + dt.timedelta(days=d + 1) <= cutoff}
    assert expired_days and len(expired_days) < len({d for d, _ in before.values()})
    table = conn.session.engine.warehouse.catalog.load_table("public.cpu")
    snapshots_before = len(table.snapshots())

    assert rows(cur, "SELECT drop_chunks('cpu')") == [(len(expired_days) + 1,)]  # + the 35-day one

    after = data_files(conn, "cpu")
    kept = {p: v for p, v in before.items() if v[0] not in expired_days}
    assert after == kept  # the same files, untouched: nothing rewritten
    table = conn.session.engine.warehouse.catalog.load_table("public.cpu")
    snapshot = table.current_snapshot()
    assert len(table.snapshots()) == snapshots_before + 2  # the flush of the pending row, the drop
    assert snapshot.summary.get("added-data-files") is None
    assert int(snapshot.summary["deleted-data-files"]) == len(before) + 1 - len(kept)
    assert snapshot.summary["omnilake.operation"] == "retention"
    # every row younger than the window is still there; the partition straddling the cutoff too
    remaining = sorted(r[0] for r in rows(cur, "SELECT v FROM cpu"))

    def day_of(age):
        return (NOW - dt.timedelta(days=age) - epoch) // dt.timedelta(days=1)
    assert remaining == pytest.approx(sorted(a for a in ages if day_of(a) not in expired_days))
    assert {9, 2, 0} <= set(remaining) and not {40, 30, 35} & set(remaining)
    assert all(epoch + dt.timedelta(days=d + 1) > cutoff for d, _ in after.values())
    assert rows(cur, "SELECT drop_chunks('cpu')") == [(0,)]


def test_drop_chunks_with_explicit_window_and_vacuum(conn, cur):
    cur.execute("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
                "WITH (time_column = 'ts', partition = 'hour', retention = '30 days')")
    for hours in (50, 30, 5, 1):
        conn.sql(f"INSERT INTO m VALUES ('{ts(0, hours)}', 'h', {hours})")
        conn.flush()
    assert rows(cur, "SELECT drop_chunks('m', INTERVAL '1 day')") == [(2,)]
    assert sorted(r[0] for r in rows(cur, "SELECT v FROM m")) == [1, 5]
    cur.execute("VACUUM m")  # nothing older than 30 days: keeps both
    assert rows(cur, "SELECT count(*) FROM m") == [(2,)]


def test_vacuum_applies_retention(conn, cur):
    cur.execute("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
                "WITH (time_column = 'ts', partition = 'month', retention = '2 months')")
    fill(conn, "m", [200, 100, 1])
    cur.execute("VACUUM m")
    assert sorted(r[0] for r in rows(cur, "SELECT v FROM m")) == [1]


def test_background_retention(warehouse):
    with omnilake.connect(warehouse, timeseries_interval=0.2) as conn:
        conn.sql("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
                 "WITH (time_column = 'ts', partition = 'day', retention = '7 days')")
        fill(conn, "m", [30, 20, 1])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if conn.sql("SELECT count(*) FROM m").fetchall() == [(1,)]:
                break
            time.sleep(0.1)
        assert conn.sql("SELECT v FROM m").fetchall() == [(1,)]


def test_retention_at_a_fixed_now_respects_partition_boundaries(conn, cur):
    cur.execute("CREATE TABLE d (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
                "WITH (time_column = 'ts', partition = 'day', retention = '1 day')")
    for day, hour in [(1, 0), (1, 23), (2, 0), (2, 12), (3, 1)]:
        conn.sql(f"INSERT INTO d VALUES ('2024-05-0{day} {hour:02}:00:00+00', 'h', {day * 100 + hour})")
    engine = conn.session.engine
    now = dt.datetime(2024, 5, 3, 12, tzinfo=dt.timezone.utc)  # cutoff 2024-05-02 12:00
    done = drop_expired(engine, "public", "d", now=now)
    assert (done.partitions_dropped, done.rows_dropped) == (1, 2)
    assert sorted(r[0] for r in rows(cur, "SELECT v FROM d")) == [200, 212, 301]
    now = dt.datetime(2024, 5, 4, 0, tzinfo=dt.timezone.utc)  # cutoff exactly the end of May 2
    assert drop_expired(engine, "public", "d", now=now).rows_dropped == 2


def test_retention_errors(conn, cur):
    cur.execute("CREATE TABLE plain (ts TIMESTAMPTZ, v INT)")
    with pytest.raises(E.InvalidParameterValue):
        cur.execute("SELECT drop_chunks('plain')")
    with pytest.raises(E.UndefinedTable):
        cur.execute("SELECT drop_chunks('nope')")
    cur.execute("CREATE TABLE m (ts TIMESTAMPTZ NOT NULL, v INT) WITH (time_column = 'ts')")
    with pytest.raises(E.DataError) as info:
        cur.execute("SELECT drop_chunks('m', '3 fortnights')")
    assert info.value.sqlstate == "22007"
    assert rows(cur, "SELECT drop_chunks('m')") == [(0,)]  # no retention set: nothing to drop


def test_optimize_keeps_time_series_files_sorted_by_tags_then_time(conn, cur):
    import pyarrow.parquet as pq
    cur.execute("CREATE TABLE s (ts TIMESTAMPTZ NOT NULL, host TEXT, v INT) "
                "WITH (time_column = 'ts', tags = 'host', partition = 'day')")
    for i, host in enumerate(["c", "a", "b", "a", "c"]):
        conn.sql(f"INSERT INTO s VALUES ('2024-01-01 0{9 - i}:00:00+00', '{host}', {i})")
        conn.flush()
    cur.execute("OPTIMIZE s")
    table = conn.session.engine.warehouse.catalog.load_table("public.s")
    (task,) = list(table.scan().plan_files())
    written = pq.read_table(task.file.file_path.removeprefix("file://")).to_pylist()
    assert [(r["host"], r["ts"].hour) for r in written] == \
        [("a", 6), ("a", 8), ("b", 7), ("c", 5), ("c", 9)]
