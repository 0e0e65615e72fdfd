"""Warehouses on S3 (a real moto_server on loopback) and on a local folder: the same contract,
plus the failures only object storage has."""

from __future__ import annotations

import time

import pyarrow.fs as pafs
import pytest

import omnilake
from omnilake import errors as E
from s3server import MotoServer, free_port

pytestmark = pytest.mark.s3


def objects(server: MotoServer, uri: str) -> list[str]:
    path = uri.split("://", 1)[1]
    infos = server.filesystem().get_file_info(pafs.FileSelector(path, allow_not_found=True,
                                                                recursive=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def test_round_trip_dml_flush_optimize(any_warehouse):
    with omnilake.connect(**any_warehouse, flush_interval=3600) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT NOT NULL, name TEXT, score DOUBLE)")
        for batch in range(3):
            cur.executemany("INSERT INTO t VALUES (%s, %s, %s)",
                            [(batch * 10 + i, f"n{batch}-{i}", i * 1.5) for i in range(10)])
            conn.flush()
        cur.execute("SELECT count(*), sum(id) FROM t")
        assert cur.fetchall() == [(30, sum(range(30)))]
        cur.execute("UPDATE t SET name = 'changed' WHERE id < 5")
        cur.execute("DELETE FROM t WHERE id >= 25")
        cur.execute("SELECT count(*), count(*) FILTER (WHERE name = 'changed') FROM t")
        assert cur.fetchall() == [(25, 5)]
        cur.execute("OPTIMIZE t")
        cur.execute("SELECT id, name FROM t WHERE id IN (3, 7, 24) ORDER BY id")
        assert cur.fetchall() == [(3, "changed"), (7, "n0-7"), (24, "n2-4")]
    # Everything is in the warehouse: a new process-like connection sees it.
    with omnilake.connect(**any_warehouse) as conn:
        assert conn.cursor().execute("SELECT count(*) FROM t").fetchall() == [(25,)]


def test_unflushed_rows_survive_reopen(any_warehouse):
    with omnilake.connect(**any_warehouse, flush_interval=3600) as conn:
        conn.sql("CREATE TABLE t (a INT)")
        conn.sql("INSERT INTO t VALUES (1), (2), (3)")
        assert conn.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(6,)]
    with omnilake.connect(**any_warehouse) as conn:
        assert conn.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(6,)]


def test_files_live_in_the_bucket_and_drop_removes_them(s3_server, s3_warehouse, tmp_path):
    with omnilake.connect(**s3_warehouse) as conn:
        conn.sql("CREATE TABLE keep (a INT); INSERT INTO keep VALUES (1)")
        conn.sql("CREATE TABLE gone (a INT); INSERT INTO gone VALUES (1)")
        conn.flush()
        stored = objects(s3_server, s3_warehouse["warehouse"])
        assert any("/gone-" in p and p.endswith(".parquet") for p in stored)
        assert any("/keep-" in p and p.endswith(".metadata.json") for p in stored)
        conn.sql("DROP TABLE gone")
        stored = objects(s3_server, s3_warehouse["warehouse"])
        assert not any("/gone-" in p for p in stored)
        assert any("/keep-" in p for p in stored)
    # The catalog and the write-ahead log are local, in local_dir.
    assert (tmp_path / "state" / "catalog.db").exists()
    assert (tmp_path / "state" / "_wal").is_dir()


def test_vacuum_removes_unreferenced_objects(s3_server, s3_warehouse):
    with omnilake.connect(**s3_warehouse, retention_hours=0.0) as conn:
        conn.sql("CREATE TABLE t (a INT)")
        for i in range(3):
            conn.sql(f"INSERT INTO t VALUES ({i})")
            conn.flush()
        conn.sql("OPTIMIZE t")
        before = objects(s3_server, s3_warehouse["warehouse"])
        time.sleep(1.1)  # S3 modification times have one-second resolution
        ((_, expired, removed, _),) = conn.sql("VACUUM t").fetchall()
        assert expired >= 2 and removed >= 4
        after = objects(s3_server, s3_warehouse["warehouse"])
        # the expiry commit itself writes one new metadata file
        assert len(after) == len(before) - removed + 1
        assert conn.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(3,)]


def test_aws_environment_variables_suffice(s3_server, monkeypatch, tmp_path):
    from s3server import ACCESS_KEY, SECRET_KEY
    bucket = s3_server.create_bucket("env-bucket")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    with omnilake.connect(f"s3://{bucket}/prefix") as conn:
        conn.sql("CREATE TABLE t (a INT); INSERT INTO t VALUES (42)")
        conn.flush()
        assert conn.cursor().execute("SELECT a FROM t").fetchall() == [(42,)]
    # The default state folder is keyed by the warehouse URI under $XDG_DATA_HOME.
    catalogs = list((tmp_path / "xdg" / "omnilake" / "warehouses").glob("env-bucket-*/catalog.db"))
    assert len(catalogs) == 1


def test_missing_bucket_is_a_clear_error(s3_server, tmp_path):
    with pytest.raises(E.OperationalError) as info:
        omnilake.connect("s3://no-such-bucket-here/lake", local_dir=str(tmp_path),
                         **s3_server.settings())
    assert info.value.sqlstate == "58P01"
    assert "bucket" in info.value.hint


def test_unreachable_endpoint_is_a_clear_error_not_a_hang(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(E.OperationalError) as info:
        omnilake.connect("s3://bucket/lake", local_dir=str(tmp_path), s3_endpoint=dead,
                         s3_access_key_id="k", s3_secret_access_key="s", s3_max_attempts=2)
    assert info.value.sqlstate == "08001"
    assert "endpoint" in info.value.hint
    assert time.monotonic() - started < 120  # generous: a hang would be caught, timing is not


def test_wrong_credentials_are_a_clear_error(tmp_path):
    server = MotoServer(free_port(), check_credentials=True).start()
    try:
        with pytest.raises(E.OperationalError) as info:
            omnilake.connect("s3://bucket/lake", local_dir=str(tmp_path), **server.settings())
        assert info.value.sqlstate == "28000"
        assert "credentials" in info.value.hint
    finally:
        server.stop()


def test_bad_addressing_setting(tmp_path):
    with pytest.raises(E.DataError, match="path"):
        omnilake.connect("s3://bucket/lake", local_dir=str(tmp_path), s3_addressing="sideways")


def test_server_killed_mid_ingest(tmp_path):
    """The store dies while rows stream in: writes are still acknowledged into the local WAL,
    reads and flushes fail with a clear OperationalError instead of hanging, and nothing of
    the failed flush becomes visible."""
    server = MotoServer(free_port()).start()
    try:
        bucket = server.create_bucket("killed")
        settings = {"warehouse": f"s3://{bucket}/lake", "local_dir": str(tmp_path / "state"),
                    "cache_dir": str(tmp_path / "cache"),
                    "flush_interval": 3600, "s3_max_attempts": 2, "s3_request_timeout": 5,
                    **server.settings()}
        conn = omnilake.connect(**settings)
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (a INT)")
        cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(100)])
        conn.flush()
        cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(100, 120)])
        warehouse = conn._engine.warehouse  # noqa: SLF001 - inspecting the catalog
        committed = warehouse.metadata_location("public", "t")
        server.stop()  # kill -9 of the S3 server
        # Rows go to the local write-ahead log: still acknowledged while the store is down.
        cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(120, 150)])
        with pytest.raises(E.OperationalError) as info:
            conn.flush()
        assert info.value.sqlstate == "08001" and "endpoint" in info.value.hint
        with pytest.raises(E.OperationalError) as info:
            cur.execute("SELECT count(*) FROM t WHERE a > 10")
        assert info.value.sqlstate == "08001"
        # The failed flush left the catalog at the last complete commit.
        assert warehouse.metadata_location("public", "t") == committed
        conn._engine.writer._closed = True  # noqa: SLF001 - the process "dies" here
        conn._engine.writer._stop.set()
        conn._engine.writer.wal.close(remove=lambda: False)
        warehouse.close()
    finally:
        server.stop()


def test_serve_an_s3_warehouse_over_the_wire(s3_server, monkeypatch, tmp_path):
    """`omnilake serve -w s3://...` as a real child process, configured by AWS variables."""
    psycopg = pytest.importorskip("psycopg")
    from s3server import ACCESS_KEY, SECRET_KEY
    from wire_server import start_server
    bucket = s3_server.create_bucket("served")
    for name, value in {"AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                        "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                        "XDG_DATA_HOME": str(tmp_path / "xdg"),
                        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}.items():
        monkeypatch.setenv(name, value)
    server = start_server(f"s3://{bucket}/lake")
    try:
        with psycopg.connect(server.conninfo(), autocommit=True) as c:
            c.execute("CREATE TABLE t (id INT, name TEXT)")
            c.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            assert c.execute("SELECT name FROM t ORDER BY id").fetchall() == [("a",), ("b",)]
    finally:
        assert server.stop() == 0
    with omnilake.connect(f"s3://{bucket}/lake") as conn:  # flushed at shutdown, same catalog
        assert conn.cursor().execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    assert objects(s3_server, f"s3://{bucket}/lake")


def test_two_nodes_share_a_warehouse_through_a_shared_catalog(s3_warehouse, tmp_path):
    """Nodes with their own local state (WAL, cache) share the bucket and a `catalog=` URI
    (here a SQLite file standing in for a PostgreSQL database)."""
    shared = {**s3_warehouse, "catalog": f"sqlite:///{tmp_path / 'shared-catalog.db'}"}
    node_a = omnilake.connect(**{**shared, "local_dir": str(tmp_path / "a"),
                                 "cache_dir": str(tmp_path / "cache-a")})
    node_b = omnilake.connect(**{**shared, "local_dir": str(tmp_path / "b"),
                                 "cache_dir": str(tmp_path / "cache-b")})
    try:
        node_a.sql("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2)")
        node_a.flush()  # other nodes see rows once they are flushed
        assert node_b.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(3,)]
        node_b.sql("INSERT INTO t VALUES (10)")
        node_b.flush()
        assert node_a.cursor().execute("SELECT sum(a) FROM t").fetchall() == [(13,)]
    finally:
        node_a.close()
        node_b.close()
    assert not (tmp_path / "a" / "catalog.db").exists()  # the catalog= URI was used


@pytest.mark.parametrize("message, sqlstate", [
    ("When reading information for key 'lake/t-403abc/x.parquet' in bucket 'b': AWS Error "
     "NO_SUCH_KEY during HeadObject operation", "58030"),  # a 403 inside a name is no denial
    ("AWS Error UNKNOWN (HTTP status 403) during HeadBucket operation", "28000"),
    ("Object Store error: Generic S3 error: Error performing GET http://127.0.0.1:1/b/k in 2s, "
     "after 10 retries - HTTP error: error sending request", "08001"),
    ("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation", "58P01"),
])
def test_storage_errors_are_classified(message, sqlstate):
    from omnilake.storage.objectstore import translate
    error = translate(OSError(message), "reading")
    assert isinstance(error, E.OperationalError) and error.sqlstate == sqlstate and error.hint
