"""BLOB columns on a local folder and on S3 (moto_server on loopback): round trips across the
inline limit, dedupe of stored objects, the blob functions with NULL and bad arguments, lazy
file objects, load_file, VACUUM of unreferenced objects, and bytea over the wire."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pyarrow.fs as pafs
import pytest

import omnilake
from omnilake import errors as E
from omnilake.engine.maintenance import vacuum_blobs
from omnilake.storage.blobs import INLINE_LIMIT, SEEN

SIZES = [0, 1, INLINE_LIMIT, INLINE_LIMIT + 1, 3 * 1024 * 1024 + 7]


def _payload(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"{seed}".encode()).digest(size) if size else b""


def _objects(conn) -> list[str]:
    """Names of the stored blob objects (markers and temporary objects left out)."""
    return sorted(k for k in conn.session.engine.blobs.objects() if not k.startswith("tmp/"))


@pytest.fixture
def bconn(any_warehouse):
    with omnilake.connect(**any_warehouse) as connection:
        connection.execute("CREATE TABLE t (id INT, b BLOB)")
        yield connection


def test_round_trip_across_the_inline_limit(bconn):
    values = [_payload(size, seed=size) for size in SIZES]
    bconn.cursor().executemany("INSERT INTO t VALUES (%s, %s)", list(enumerate(values)))
    for _flushed in (False, True):  # from the memtable, then from Parquet
        got = bconn.execute("SELECT id, b, blob_size(b), blob_sha256(b) FROM t ORDER BY id").fetchall()
        assert [g[1] for g in got] == values
        assert [g[2] for g in got] == SIZES
        assert [g[3] for g in got] == [hashlib.sha256(v).hexdigest() for v in values]
        bconn.flush()
    stored = [hashlib.sha256(v).hexdigest() for v in values if len(v) > INLINE_LIMIT]
    assert _objects(bconn) == sorted(stored)
    assert bconn.execute("SELECT b FROM t").description[0][1] == omnilake.BINARY


def test_same_content_is_stored_once(bconn):
    big = _payload(INLINE_LIMIT * 3, seed=1)
    cur = bconn.cursor()
    cur.execute("INSERT INTO t VALUES (1, %s)", [big])
    cur.execute("INSERT INTO t VALUES (2, %s), (3, %s)", [big, big])
    bconn.flush()
    cur.execute("CREATE TABLE u (b BLOB)")
    cur.execute("INSERT INTO u SELECT b FROM t")  # blobs copied between tables: no new object
    assert _objects(bconn) == [hashlib.sha256(big).hexdigest()]
    assert cur.execute("SELECT count(DISTINCT blob_uri(b)) FROM t").fetchall() == [(1,)]
    assert cur.execute("SELECT b FROM u LIMIT 1").fetchall() == [(big,)]


def test_functions(bconn, tmp_path):
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\x00" * 64
    big = _payload(INLINE_LIMIT + 100, seed=2)
    cur = bconn.cursor()
    cur.execute("INSERT INTO t VALUES (1, %s), (2, %s), (3, NULL), (4, 'plain text')", [png, big])
    got = cur.execute("SELECT id, blob_size(b), blob_mime(b), blob_read(b, 1, 3), "
                      "blob_read(b, 5), blob_uri(b) FROM t ORDER BY id").fetchall()
    assert got[0][:5] == (1, len(png), "image/png", png[1:4], png[5:])
    assert got[0][5] is None  # inline: no object
    assert got[1][:5] == (2, len(big), "application/octet-stream", big[1:4], big[5:])
    assert got[1][5].endswith("/blobs/" + hashlib.sha256(big).hexdigest()[:2] + "/"
                              + hashlib.sha256(big).hexdigest())
    assert got[2] == (3, None, None, None, None, None)
    assert got[3][:4] == (4, 10, "text/plain", b"lai")
    # ranges at the edges: the end, past the end of a length, the whole value
    assert cur.execute("SELECT blob_read(b, blob_size(b)), blob_read(b, 65000, 1000000), "
                       "blob_read(b), blob_read(b, 0, NULL) FROM t WHERE id = 2").fetchall() == \
        [(b"", big[65000:], big, None)]


@pytest.mark.parametrize("sql, error, sqlstate", [
    ("SELECT blob_read(b, 100) FROM t WHERE id = 1", E.InvalidParameterValue, "22023"),
    ("SELECT blob_read(b, -1) FROM t WHERE id = 1", E.InvalidParameterValue, "22023"),
    ("SELECT blob_read(b, 0, -5) FROM t WHERE id = 1", E.SubstringError, "22011"),
    ("SELECT blob_read(b, 0, 1, 2) FROM t", E.UndefinedFunction, "42883"),
    ("SELECT blob_size(id) FROM t", E.Error, None),
    ("INSERT INTO t VALUES (9, 42)", E.DatatypeMismatch, "42804"),
    ("INSERT INTO t VALUES (9, '\\xzz')", E.InvalidTextRepresentation, "22P02"),
    ("INSERT INTO t SELECT 9, load_file('/no/such/file')", E.UndefinedFile, "58P01"),
    ("INSERT INTO t SELECT 9, load_file('ftp://host/x')", E.InvalidParameterValue, "22023"),
])
def test_bad_arguments(bconn, sql, error, sqlstate):
    bconn.execute("INSERT INTO t VALUES (1, 'abc')")
    with pytest.raises(error) as info:
        bconn.execute(sql).fetchall()
    if sqlstate:
        assert info.value.sqlstate == sqlstate
    assert bconn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]  # nothing written


def test_load_file_and_lazy_reads(bconn, tmp_path):
    path = tmp_path / "doc.bin"
    data = _payload(2 * 1024 * 1024 + 3, seed=3)
    path.write_bytes(data)
    small = tmp_path / "note.txt"
    small.write_text("hello")
    cur = bconn.cursor()
    cur.execute("INSERT INTO t SELECT 1, load_file(%s)", [str(path)])
    cur.execute("INSERT INTO t VALUES (2, load_file(%s)), (3, load_file(NULL))",
                [small.as_uri()])
    bconn.flush()
    bconn.lazy_blobs = True
    (one,), (two,), (three,) = cur.execute("SELECT b FROM t ORDER BY id").fetchall()
    assert three is None
    assert one.seekable() and one.readable()
    one.seek(1_000_000)
    assert one.read(10) == data[1_000_000:1_000_010]
    one.seek(-3, os.SEEK_END)
    assert one.read() == data[-3:]
    assert two.read() == b"hello"
    value = bconn.sql("SELECT b FROM t WHERE id = 1").to_arrow().column(0)[0].as_py()
    with bconn.open_blob(value) as f:
        assert hashlib.sha256(f.read()).hexdigest() == value["sha256"]


def test_load_file_from_the_store(s3_warehouse, tmp_path):
    """An s3:// URL in the warehouse's store is streamed through the same S3 client."""
    with omnilake.connect(**s3_warehouse) as conn:
        fs = conn.session.engine.blobs.fs
        bucket = s3_warehouse["warehouse"].split("/")[2]
        data = _payload(INLINE_LIMIT * 2, seed=4)
        with fs.open_output_stream(f"{bucket}/incoming/x.bin") as out:
            out.write(data)
        conn.execute("CREATE TABLE t (b BLOB)")
        conn.execute(f"INSERT INTO t SELECT load_file('s3://{bucket}/incoming/x.bin')")
        assert conn.execute("SELECT b FROM t").fetchall() == [(data,)]
        with pytest.raises(E.UndefinedFile):
            conn.execute(f"INSERT INTO t SELECT load_file('s3://{bucket}/incoming/none')")


def test_vacuum_removes_unreferenced_blobs_after_the_window(bconn):
    keep, drop = _payload(INLINE_LIMIT * 2, seed=5), _payload(INLINE_LIMIT * 2, seed=6)
    cur = bconn.cursor()
    cur.execute("INSERT INTO t VALUES (1, %s), (2, %s)", [keep, drop])
    cur.execute("DELETE FROM t WHERE id = 2")
    engine = bconn.session.engine
    week = dt.timedelta(hours=engine.settings.retention_hours)
    sha_keep, sha_drop = (hashlib.sha256(v).hexdigest() for v in (keep, drop))
    # within the window: the snapshot before the DELETE still refers to it, and it is new
    assert vacuum_blobs(engine, week).blobs_removed == 0
    # past the window but an older snapshot still refers to it: kept
    later = dt.datetime.now().timestamp() + week.total_seconds() + 60
    assert vacuum_blobs(engine, week, now=later).blobs_removed == 0
    # the table's VACUUM expires that snapshot; then the object goes, and only it
    from omnilake.engine.maintenance import vacuum
    table = engine.warehouse.catalog.load_table(("public", "t"))
    vacuum(table, week, now=later)
    done = vacuum_blobs(engine, week, now=later)
    assert done.blobs_removed == 1 and done.bytes_removed == len(drop)
    assert _objects(bconn) == [sha_keep]
    assert cur.execute("SELECT b FROM t").fetchall() == [(keep,)]
    # a re-insert of removed content stores it again
    cur.execute("INSERT INTO t VALUES (3, %s)", [drop])
    assert sorted(_objects(bconn)) == sorted([sha_keep, sha_drop])


def test_a_dedupe_hit_renews_the_window(conn):
    """Content stored long ago and inserted again (not yet committed by its writer) must
    survive: the write leaves a fresh marker beside the object."""
    engine = conn.session.engine
    data = _payload(INLINE_LIMIT * 2, seed=7)
    ref = engine.blobs.put_bytes(data)
    path = engine.blobs._path(ref.sha256)
    old = dt.datetime.now().timestamp() - 30 * 24 * 3600
    os.utime(path, (old, old))
    week = dt.timedelta(hours=168)
    engine.blobs.put_bytes(data)  # the dedupe hit
    assert os.path.exists(path + SEEN)
    assert vacuum_blobs(engine, week).blobs_removed == 0
    os.utime(path + SEEN, (old, old))
    assert vacuum_blobs(engine, week).blobs_removed == 1
    assert not os.path.exists(path) and not os.path.exists(path + SEEN)


def test_vacuum_statement_reports_blobs(conn):
    conn.execute("CREATE TABLE t (b BLOB)")
    rows = conn.execute("VACUUM").fetchall()
    assert rows[-1][0] == "(blobs)"


def test_missing_object_is_a_clear_error(conn):
    conn.execute("CREATE TABLE t (b BLOB)")
    data = _payload(INLINE_LIMIT * 2, seed=8)
    conn.execute("INSERT INTO t VALUES (%s)", [data])
    store = conn.session.engine.blobs
    os.remove(store._path(hashlib.sha256(data).hexdigest()))
    with pytest.raises(E.UndefinedFile) as info:
        conn.execute("SELECT blob_read(b, 0, 10) FROM t").fetchall()
    assert info.value.sqlstate == "58P01"


def test_stored_objects_are_plain_objects_on_s3(s3_warehouse):
    """Another tool (pyarrow's S3 client) finds each object at its content address."""
    with omnilake.connect(**s3_warehouse) as conn:
        conn.execute("CREATE TABLE t (b BLOB)")
        data = _payload(INLINE_LIMIT * 4, seed=9)
        conn.execute("INSERT INTO t VALUES (%s)", [data])
        uri = conn.execute("SELECT blob_uri(b) FROM t").fetchall()[0][0]
        fs = pafs.S3FileSystem(endpoint_override=s3_warehouse["s3_endpoint"], scheme="http",
                               access_key=s3_warehouse["s3_access_key_id"],
                               secret_key=s3_warehouse["s3_secret_access_key"],
                               region="us-east-1")
        with fs.open_input_file(uri.removeprefix("s3://")) as f:
            assert f.read() == data


def test_load_file_over_http(conn, tmp_path):
    """An http URL is streamed into the store; a missing one is a clear error."""
    import functools
    import http.server
    import threading
    data = _payload(INLINE_LIMIT * 3 + 5, seed=10)
    (tmp_path / "x.bin").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        conn.execute("CREATE TABLE t (b BLOB)")
        conn.execute(f"INSERT INTO t SELECT load_file('{base}/x.bin')")
        assert conn.execute("SELECT b, blob_sha256(b) FROM t").fetchall() == \
            [(data, hashlib.sha256(data).hexdigest())]
        with pytest.raises(E.UndefinedFile) as info:
            conn.execute(f"INSERT INTO t SELECT load_file('{base}/missing')")
        assert info.value.sqlstate == "58P01"
    finally:
        httpd.shutdown()


@pytest.mark.parametrize("size", [0, 10_000, INLINE_LIMIT, INLINE_LIMIT + 1, 1_000_000])
def test_streams_of_any_length(conn, size):
    """Streams that return short reads, around the inline limit: inline exactly when small."""
    import io

    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read(self, n=-1):
            n = 1000 if n is None or n < 0 else min(n, 1000)
            part = self.data[self.pos:self.pos + n]
            self.pos += len(part)
            return part

    data = _payload(size, seed=size + 1)
    store = conn.session.engine.blobs
    ref = store.put_stream(Trickle(data))
    assert ref.size == size and ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.inline == (size <= INLINE_LIMIT)
    assert store.read(ref) == data
    assert not [k for k in store.objects() if k.startswith("tmp/")]  # no temporary left
