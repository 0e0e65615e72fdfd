"""Faults between OmniLake and S3: a proxy of our own (tests/fault_proxy.py) in front of
moto_server answers 500, drops connections, delays and stalls a share of the requests; the
store goes away and comes back. Nothing acknowledged may be lost, no metadata may be
corrupt, no commit may be partly visible."""

from __future__ import annotations

import pytest
from fault_proxy import FaultProxy
from pyiceberg.expressions import AlwaysTrue

import omnilake
from omnilake import errors as E

pytestmark = pytest.mark.s3


def _settings(s3_warehouse: dict, endpoint: str, **more) -> dict:
    return {**s3_warehouse, "s3_endpoint": endpoint, "flush_interval": 3600, **more}


def _check_table(s3_warehouse: dict, expected_rows: int, expected_sum: int) -> None:
    """Straight to the server: the rows, and every metadata, manifest and data file that the
    catalog's current metadata refers to, read back whole by pyiceberg."""
    with omnilake.connect(**s3_warehouse) as conn:
        assert conn.cursor().execute("SELECT count(*), sum(a) FROM t").fetchall() == \
            [(expected_rows, expected_sum)]
        table = conn.session.engine.warehouse.catalog.load_table(("public", "t"))
        data = table.scan(row_filter=AlwaysTrue()).to_arrow()
        assert data.num_rows == expected_rows
        for snapshot in table.snapshots():  # every manifest of every snapshot still parses
            for manifest in snapshot.manifests(table.io):
                manifest.fetch_manifest_entry(table.io, discard_deleted=False)


@pytest.mark.slow  # ~35 s each, mostly retry backoff
@pytest.mark.parametrize("cache_size", [0, 1 << 30], ids=["datafusion-reads", "read-cache"])
def test_ingest_through_a_faulty_network_loses_nothing(s3_server, s3_warehouse, cache_size):
    """Scans read data files through DataFusion's S3 store (no cache) or through pyarrow into
    the read cache: both paths meet the faults."""
    proxy = FaultProxy(s3_server.port, error_rate=0.06, drop_rate=0.04, delay_rate=0.06,
                       stall_rate=0.01, stall_s=1.5, seed=6).start()
    try:
        settings = _settings(s3_warehouse, proxy.endpoint, s3_max_attempts=10,
                             s3_request_timeout=1.0, s3_connect_timeout=1.0,
                             cache_size=cache_size)
        with omnilake.connect(**settings) as conn:
            cur = conn.cursor()
            cur.execute("CREATE TABLE t (a INT NOT NULL, note TEXT)")
            total = 0
            for batch in range(6):
                rows = [(batch * 100 + i, f"row {i}") for i in range(100)]
                cur.executemany("INSERT INTO t VALUES (%s, %s)", rows)
                total += len(rows)
                conn.flush()  # one Iceberg commit per batch, through the faulty network
            cur.execute("OPTIMIZE t")
            cur.execute("DELETE FROM t WHERE a % 10 = 0")
            cur.execute("SELECT count(*), sum(a) FROM t")
            expected = [(v, v) for v in range(600) if v % 10 != 0]
            assert cur.fetchall() == [(len(expected), sum(v for v, _ in expected))]
        assert proxy.counts["errors"] > 0 and proxy.counts["drops"] > 0
    finally:
        proxy.stop()
    _check_table(s3_warehouse, len(expected), sum(v for v, _ in expected))


def test_store_away_and_back_keeps_every_acknowledged_row(s3_server, s3_warehouse):
    """The store becomes unreachable mid-ingest (the proxy stops: connections refused). Writes
    are still acknowledged into the local WAL, a flush fails with a clear error, the process
    dies; once the store is back, opening the warehouse replays the log."""
    proxy = FaultProxy(s3_server.port).start()
    settings = _settings(s3_warehouse, proxy.endpoint, s3_max_attempts=2)
    conn = omnilake.connect(**settings)
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (a INT NOT NULL)")
    cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(50)])
    conn.flush()
    cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(50, 60)])
    warehouse = conn.session.engine.warehouse
    committed = warehouse.metadata_location("public", "t")
    proxy.stop()
    cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(60, 100)])  # acknowledged
    with pytest.raises(E.OperationalError) as info:
        conn.flush()
    assert info.value.sqlstate == "08001"
    assert warehouse.metadata_location("public", "t") == committed  # nothing partly visible
    # The process dies without flushing: its log stays behind, unlocked.
    writer = conn.session.engine.writer
    writer._closed = True  # noqa: SLF001
    writer._stop.set()  # noqa: SLF001
    writer.wal.close(remove=lambda: False)
    warehouse.close()
    # The store comes back on the same address.
    back = FaultProxy(s3_server.port, port=proxy.port).start()
    try:
        with omnilake.connect(**settings) as conn:
            assert conn.cursor().execute("SELECT count(*), sum(a) FROM t").fetchall() == \
                [(100, sum(range(100)))]
    finally:
        back.stop()
    _check_table(s3_warehouse, 100, sum(range(100)))
