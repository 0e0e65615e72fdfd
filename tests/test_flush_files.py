"""Flushes write their own data files (storage/datafiles.py) and commit them with the LSN:
files other engines read as pyiceberg's own, writes that go on during a flush, and crashes
between writing the files and committing them."""

import datetime as dt
import glob
import multiprocessing as mp
import os
import signal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import omnilake
from omnilake.engine import writes
from omnilake.storage import datafiles

T0 = dt.datetime(2026, 3, 1, 22, 0, tzinfo=dt.timezone.utc)


def _readings(n: int, start: int = 0, step_s: int = 97) -> pa.Table:
    """n rows over several hours (and a day boundary), tags with NULLs, a NULL field."""
    hosts = ["b", "a", None, "c", "a"]
    return pa.table({
        "ts": pa.array([T0 + dt.timedelta(seconds=(start + i) * step_s) for i in range(n)],
                       pa.timestamp("us", "UTC")),
        "host": pa.array([hosts[i % 5] for i in range(start, start + n)], pa.string()),
        "region": pa.array([None if i % 7 == 0 else f"r{i % 3}" for i in range(start, start + n)]),
        "v": pa.array([None if i % 11 == 0 else i * 0.5 for i in range(start, start + n)]),
        "n": pa.array(list(range(start, start + n)), pa.int64()),
    })


def _create(conn, name: str = "tsf", partition: str = "hour") -> None:
    conn.sql(f"CREATE TABLE {name} (ts TIMESTAMPTZ NOT NULL, host TEXT, region TEXT, "
             f"v DOUBLE PRECISION, n BIGINT) WITH (time_column = 'ts', tags = 'host, region', "
             f"partition = '{partition}')")


def _table(conn, name: str = "tsf"):
    return conn.session.engine.warehouse.catalog.load_table(f"public.{name}")


def _data_files(table) -> list:
    return [task.file for task in table.scan().plan_files()]


def test_flushed_files_read_as_pyiceberg_writes_them(warehouse):
    data = _readings(1000)
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        _create(conn)
        for i in range(0, 1000, 150):
            conn.insert("tsf", data.slice(i, 150))
        assert conn.session.engine.writer.flush("public", "tsf") == 1000
        table = _table(conn)
        files = _data_files(table)
        sql_rows = conn.sql("SELECT ts, host, region, v, n FROM tsf ORDER BY n").fetchall()
    assert sql_rows == [tuple(r.values()) for r in data.to_pylist()]

    # pyiceberg's own scan reads every row once.
    scanned = table.scan().to_arrow().sort_by("n")
    assert scanned.num_rows == 1000
    assert scanned.to_pylist() == data.to_pylist()

    # DuckDB reads the same files to the same rows.
    paths = [f.file_path.removeprefix("file://") for f in files]
    duck = duckdb.sql(f"SELECT count(*), sum(n), count(v), count(host), min(ts), max(ts) "
                      f"FROM read_parquet({paths!r})").fetchall()
    assert duck[0][:4] == (1000, sum(range(1000)), pc.count(data.column("v")).as_py(),
                           pc.count(data.column("host")).as_py())

    # A file per hour partition, its rows sorted as the table's sort order says, its
    # statistics and partition value what pyiceberg computes for the same rows.
    from pyiceberg.io.pyarrow import _dataframe_to_data_files
    schema = table.schema()
    hours = pc.unique(pc.divide(pc.cast(data.column("ts"), pa.int64()), 3_600_000_000)).to_pylist()
    assert sorted(f.partition[0] for f in files) == sorted(hours)
    ids = {f.name: f.field_id for f in schema.fields}
    for f in files:
        path = f.file_path.removeprefix("file://")
        rows = pq.read_table(path)
        expected = rows.sort_by([("host", "ascending"), ("region", "ascending"), ("ts", "ascending")])
        assert rows.equals(expected)
        hour = pc.divide(pc.cast(rows.column("ts"), pa.int64()), 3_600_000_000)
        assert pc.all(pc.equal(hour, f.partition[0])).as_py()
        parquet = pq.ParquetFile(path)
        assert {int(field.metadata[b"PARQUET:field_id"]) for field in parquet.schema_arrow} == set(ids.values())
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
        theirs, = _dataframe_to_data_files(table.metadata, expected.cast(schema.as_arrow()), table.io)
        for attribute in ("record_count", "value_counts", "null_value_counts", "nan_value_counts",
                          "lower_bounds", "upper_bounds", "partition", "column_sizes"):
            assert getattr(f, attribute) == getattr(theirs, attribute), attribute
        table.io.delete(theirs.file_path)


def test_unpartitioned_and_unsorted_tables_flush_too(warehouse):
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        conn.sql("CREATE TABLE plain (i INT, s TEXT)")
        conn.sql("INSERT INTO plain VALUES (3, 'c'), (1, NULL), (2, 'b')")
        conn.flush()
        table = _table(conn, "plain")
        assert table.scan().to_arrow().column("i").to_pylist() == [3, 1, 2]  # kept in order
        assert len(_data_files(table)) == 1


strings = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "b", "é", "z"]))
floats = st.one_of(st.none(), st.sampled_from([float("nan"), -1.5, 0.0, 2.0, float("inf")]))
ints = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([-2**63, 2**63 - 1]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(strings, floats, ints, st.integers(-5, 5), st.booleans()),
                min_size=0, max_size=40),
       st.lists(st.tuples(st.sampled_from(["s", "f", "i", "t", "b"]),
                          st.sampled_from(["ascending", "descending"])),
                min_size=1, max_size=4, unique_by=lambda k: k[0]))
def test_sort_rows_orders_as_sort_by(values, keys):
    """The ranked sort is Table.sort_by's order, ties and NULL/NaN placement included."""
    s, f, i, t, b = zip(*values) if values else ([], [], [], [], [])
    rows = pa.table({"s": pa.array(s, pa.large_string()), "f": pa.array(f, pa.float64()),
                     "i": pa.array(i, pa.int64()),
                     "t": pa.array([x * 1000 for x in t], pa.timestamp("us", "UTC")),
                     "b": pa.array(b, pa.bool_()), "row": pa.array(range(len(values)))})
    ours = datafiles.sort_rows(rows, keys)
    assert ours.column("row").equals(rows.sort_by(keys).column("row"))  # (NaN != NaN)


def test_sort_rows_on_chunked_string_keys():
    rows = pa.concat_tables([pa.table({"k": pa.array(["b", None, "a"], pa.string()), "x": [1, 2, 3]}),
                             pa.table({"k": pa.array(["a", "c", None], pa.string()), "x": [4, 5, 6]})])
    keys = [("k", "ascending"), ("x", "descending")]
    assert datafiles.sort_rows(rows, keys).equals(rows.sort_by(keys))


def _flushing_with(monkeypatch, during):
    """Run `during()` after the next flush wrote its files and before it commits them."""
    seen = {}

    def write_then(table, rows, keys=None):
        files = datafiles.write_data_files(table, rows, keys)
        if "files" not in seen:
            seen["files"] = files
            during()
        return files

    monkeypatch.setattr(writes, "write_data_files", write_then)
    return seen


def test_writes_and_reads_go_on_during_a_flush(warehouse, monkeypatch):
    """The rows a flush writes stay pending and visible until its commit; rows written
    meanwhile (also small ones merged into its last pending table) stay pending after it."""
    first, later = _readings(300), _readings(200, start=300)
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        _create(conn)
        conn.insert("tsf", first.slice(0, 250))
        conn.sql("INSERT INTO tsf (ts, host, n) VALUES ('2026-03-01 21:00:00+00', 'x', -1)")
        seen_counts = []

        def during():
            seen_counts.append(conn.sql("SELECT count(*) FROM tsf").fetchall()[0][0])
            # merges into the last pending table (a single row), then a table of its own
            conn.sql("INSERT INTO tsf (ts, host, n) VALUES ('2026-03-01 21:00:01+00', 'x', -2)")
            conn.insert("tsf", later)
            seen_counts.append(conn.sql("SELECT count(*) FROM tsf").fetchall()[0][0])

        _flushing_with(monkeypatch, during)
        conn.insert("tsf", first.slice(250, 50))
        writer = conn.session.engine.writer
        assert writer.flush("public", "tsf") == 301
        assert seen_counts == [301, 502]
        assert _table(conn).scan().to_arrow().num_rows == 301
        assert sum(t.num_rows for t in writer.memtable.rows("public.tsf")) == 201
        got = sorted(r[0] for r in conn.sql("SELECT n FROM tsf").fetchall())
        assert got == sorted([-1, -2, *range(500)])
    with omnilake.connect(warehouse) as conn:  # the rest flushed at close, nothing twice
        got = sorted(r[0] for r in conn.sql("SELECT n FROM tsf").fetchall())
        assert got == sorted([-1, -2, *range(500)])
        assert _table(conn).scan().to_arrow().num_rows == 502


def test_a_transaction_that_replaces_the_rows_supersedes_the_flush(warehouse, monkeypatch):
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        _create(conn)
        conn.insert("tsf", _readings(100))
        other = conn.session.engine.session()

        def during():
            other.execute("BEGIN")
            other.execute("UPDATE tsf SET v = -1 WHERE n < 10")
            other.execute("COMMIT")

        seen = _flushing_with(monkeypatch, during)
        assert conn.session.engine.writer.flush("public", "tsf") == 0  # nothing of its own
        assert seen["files"] and not any(os.path.exists(f.file_path.removeprefix("file://"))
                                         for f in seen["files"])  # its files are gone
        assert conn.sql("SELECT count(*), count(*) FILTER (WHERE v = -1) FROM tsf").fetchall() == [(100, 10)]
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT count(*), count(*) FILTER (WHERE v = -1) FROM tsf").fetchall() == [(100, 10)]


def test_a_dropped_table_supersedes_the_flush(warehouse, monkeypatch):
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        _create(conn)
        conn.insert("tsf", _readings(50))
        _flushing_with(monkeypatch, lambda: conn.sql("DROP TABLE tsf"))
        assert conn.session.engine.writer.flush("public", "tsf") == 0
        assert conn.session.engine.writer.memtable.rows("public.tsf") == []
    with omnilake.connect(warehouse) as conn:  # nothing comes back from the log either
        _create(conn)
        assert conn.sql("SELECT count(*) FROM tsf").fetchall() == [(0,)]


def _flush_and_die(warehouse: str, rows: int, where: str) -> None:
    """Write rows, then flush and die by SIGKILL at `where`: after the data files are
    written (not committed), or right after the commit (the memtable and log untouched)."""
    conn = omnilake.connect(warehouse, flush_interval=3600)
    conn.insert("tsf", _readings(rows))

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "written":
        real = datafiles.write_data_files
        writes.write_data_files = lambda *a, **k: (real(*a, **k), die())[0]
    else:
        writes.Writer._note_flush = die
    conn.flush()
    os._exit(3)  # not reached


@pytest.mark.parametrize("where", ["written", "committed"])
def test_kill_9_around_the_flush_commit_loses_and_doubles_nothing(warehouse, where):
    with omnilake.connect(warehouse) as conn:
        _create(conn)
    proc = mp.get_context("spawn").Process(target=_flush_and_die, args=(warehouse, 400, where))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    table_dir = os.path.join(warehouse, "public", "tsf")
    written = glob.glob(os.path.join(warehouse, "**", "*.parquet"), recursive=True)
    assert written, f"the flush wrote no files under {table_dir}"
    with omnilake.connect(warehouse) as conn:  # recovery replays exactly what is missing
        got = sorted(r[0] for r in conn.sql("SELECT n FROM tsf").fetchall())
        assert got == list(range(400))
        table = _table(conn)
        assert table.scan().to_arrow().num_rows == 400
        committed = {f.file_path.removeprefix("file://") for f in _data_files(table)}
    if where == "written":  # the dead flush's files: on disk, in no snapshot
        assert set(written) - committed
    else:
        assert set(written) <= committed
