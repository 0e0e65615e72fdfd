"""Chunks of cached files skipped by their bounds (engine/zone_maps.py): every filtered query
gives the rows the Parquet reader gives, and selective filters on a sorted table skip chunks."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from pyiceberg.expressions import AlwaysTrue, GreaterThan, IsNull, LessThan, Or
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, NestedField, StringType

import omnilake
from omnilake.engine.zone_maps import ChunkMetrics, add_column, chunk_filter

HOSTS = 40
STEPS = 6000  # 240,000 rows: several chunks of the column cache per partition
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

QUERIES = [
    "SELECT count(*), max(usage) FROM cpu WHERE host = 'h07'",
    "SELECT count(*) FROM cpu WHERE host IN ('h03', 'h31')",
    "SELECT count(*) FROM cpu WHERE host > 'h35' OR host < 'h02'",
    "SELECT count(*) FROM cpu WHERE NOT (host <> 'h12')",
    "SELECT date_trunc('hour', ts) AS h, max(usage) FROM cpu WHERE host = 'h20' AND "
    "ts >= '2026-01-01 05:00:00+00' AND ts < '2026-01-01 07:00:00+00' GROUP BY 1 ORDER BY 1",
    "SELECT count(*) FROM cpu WHERE ts < '2026-01-01 00:10:00+00'",
    "SELECT count(*) FROM cpu WHERE usage > 99.5",
    "SELECT count(*) FROM cpu WHERE usage > 1000",  # only NaN rows (NaN sorts above all)
    "SELECT count(*) FROM cpu WHERE usage = 'NaN'::float8",
    "SELECT count(*) FROM cpu WHERE usage IS NULL",
    "SELECT count(*) FROM cpu WHERE note IS NOT NULL",
    "SELECT count(*) FROM cpu WHERE note = 'late'",
    "SELECT count(*) FROM cpu WHERE host = 'nobody'",
    "SELECT host, count(*) FROM cpu WHERE seq BETWEEN 1000 AND 1010 GROUP BY host ORDER BY host",
]


def _load(path):
    """A time-series table (files sorted by host, then time) with NaN and NULL in places."""
    rng = np.random.default_rng(11)
    hosts = np.tile([f"h{i:02d}" for i in range(HOSTS)], STEPS)
    micros = np.repeat(np.arange(STEPS, dtype=np.int64) * 10_000_000, HOSTS) + \
        int(T0.timestamp() * 1_000_000)
    usage = rng.uniform(0, 100, len(hosts)).round(2)
    usage[(hosts == "h33") & (np.arange(len(hosts)) % 97 == 0)] = np.nan
    nulls = (hosts == "h05") & (np.arange(len(hosts)) % 89 == 0)
    note = np.where(hosts == "h38", "late", None)
    with omnilake.connect(path) as conn:
        conn.execute("CREATE TABLE cpu (ts TIMESTAMPTZ NOT NULL, host TEXT, usage DOUBLE PRECISION, "
                     "note TEXT, seq BIGINT) WITH (time_column = 'ts', tags = 'host', "
                     "partition = 'day')")
        conn.insert("cpu", pa.table({
            "ts": pa.array(micros, pa.timestamp("us", "UTC")), "host": hosts,
            "usage": pa.array(usage, mask=nulls), "note": pa.array(note, pa.string()),
            "seq": np.arange(len(hosts))}))
        conn.flush()


def _answers(path, **settings):
    with omnilake.connect(path, **settings) as conn:
        answers = []
        for sql in QUERIES:
            runs = [conn.execute(sql).fetchall() for _ in range(3)]  # Parquet, admit, memory
            assert runs[1] == runs[2] == runs[0], sql
            answers.append(runs[0])
        return answers, conn.execute("SELECT chunks_skipped FROM omnilake_system.column_cache"
                                     ).fetchall()[0][0]


def test_skipped_chunks_never_change_a_result(tmp_path):
    _load(tmp_path)
    expected, none_skipped = _answers(tmp_path, column_cache_bytes=0)
    got, skipped = _answers(tmp_path)
    for sql, want, have in zip(QUERIES, expected, got):
        assert have == want, sql
    assert none_skipped == 0 and skipped > 0


def test_nan_rows_are_found_cached_or_not(tmp_path):
    """NaN sorts above every number (PostgreSQL, DataFusion): `usage > 1000` matches the NaN
    rows. A chunk holding NaN has no bounds for that column; the Parquet path hides float
    columns from DataFusion's own pruning, which leaves NaN out (apache/datafusion#15812)."""
    _load(tmp_path)
    for settings in ({}, {"column_cache_bytes": 0}):
        with omnilake.connect(tmp_path, **settings) as conn:
            total = conn.execute("SELECT count(*) FILTER (WHERE usage > 1000) FROM cpu").fetchall()
            for _ in range(3):
                assert conn.execute("SELECT count(*) FROM cpu WHERE usage > 1000").fetchall() \
                    == conn.execute("SELECT count(*) FROM cpu WHERE usage = 'NaN'::float8"
                                    ).fetchall() == total
            assert total[0][0] > 0


def test_a_one_host_query_scans_one_chunk(tmp_path):
    _load(tmp_path)
    with omnilake.connect(tmp_path) as conn:
        for _ in range(2):
            conn.execute("SELECT sum(usage) FROM cpu WHERE host = 'h07'").fetchall()
        chunks = len(conn.session.engine.column_cache._files.popitem()[1].columns[(2, "text")])
        before = conn.execute("SELECT chunks_skipped FROM omnilake_system.column_cache").fetchall()
        conn.execute("SELECT sum(usage) FROM cpu WHERE host = 'h07'").fetchall()
        after = conn.execute("SELECT chunks_skipped FROM omnilake_system.column_cache").fetchall()
    assert chunks >= 4
    assert after[0][0] - before[0][0] >= chunks - 2  # the host's rows span at most two chunks


def test_chunk_bounds_judge_like_file_metrics():
    schema = Schema(NestedField(1, "x", DoubleType(), required=False),
                    NestedField(2, "s", StringType(), required=False))
    metrics = [ChunkMetrics(3), ChunkMetrics(3), ChunkMetrics(3)]
    add_column(metrics, 1, DoubleType(), [pa.array([1.0, 2.0, 3.0]), pa.array([1.0, float("nan"), 2.0]),
                                          pa.array([None, None, None], pa.float64())])
    add_column(metrics, 2, StringType(), [pa.array(["b", "c", None], pa.string_view()),
                                          pa.array(["x", "y", "z"]), pa.array(["a", "a", "a"])])
    assert metrics[1].lower_bounds.get(1) is None  # NaN: no bounds for that column
    above = chunk_filter(schema, GreaterThan("x", 2.5), "x > 2.5")
    assert [above.might_match(m) for m in metrics] == [True, True, False]
    nulls = chunk_filter(schema, Or(IsNull("s"), LessThan("s", "b")), "s IS NULL OR s < 'b'")
    assert [nulls.might_match(m) for m in metrics] == [True, False, True]
    assert chunk_filter(schema, AlwaysTrue(), "true") is None  # nothing to judge by
    with pytest.raises(ValueError):  # cannot bind: the cache then keeps every chunk
        assert chunk_filter(schema, GreaterThan("missing", 1), "missing > 1").field_ids


@pytest.mark.parametrize("value", ["h07", "h99"])
def test_filters_on_the_memtable_and_cached_files_together(tmp_path, value):
    _load(tmp_path)
    with omnilake.connect(tmp_path) as conn:
        for _ in range(2):
            conn.execute("SELECT count(*) FROM cpu WHERE host = %s", (value,)).fetchall()
        conn.execute("INSERT INTO cpu (ts, host, usage) VALUES ('2026-01-02 00:00:00+00', %s, 1)",
                     (value,))
        got = conn.execute("SELECT count(*) FROM cpu WHERE host = %s", (value,)).fetchall()
    assert got == [(STEPS + 1 if value == "h07" else 1,)]
