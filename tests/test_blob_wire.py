"""BLOB columns over the PostgreSQL wire protocol: they read as bytea (text and binary
formats, simple and extended protocol, COPY TO), and bytea parameters write them."""

from __future__ import annotations

import hashlib

import pytest

psycopg = pytest.importorskip("psycopg")

from wire_server import start_server  # noqa: E402

from omnilake.storage.blobs import INLINE_LIMIT  # noqa: E402

BIG = hashlib.shake_256(b"wire").digest(5 * 1024 * 1024 + 11)  # a stored object
SMALL = b"\x00\x01binary\xff"                                   # inline


@pytest.fixture(scope="module")
def incoming(tmp_path_factory):
    return tmp_path_factory.mktemp("incoming")


@pytest.fixture(scope="module")
def server(tmp_path_factory, incoming):
    srv = start_server(str(tmp_path_factory.mktemp("wire") / "wh"), "--load-file-from", str(incoming))
    yield srv
    assert srv.stop() == 0


def test_blobs_read_as_bytea(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE files (id INT, b BLOB)")
        c.execute("INSERT INTO files VALUES (%s, %s), (%s, %s), (3, NULL)", (1, SMALL, 2, BIG))
        assert len(BIG) > INLINE_LIMIT
        for binary in (False, True):
            cur = c.cursor(binary=binary)
            rows = cur.execute("SELECT id, b FROM files ORDER BY id").fetchall()
            assert rows == [(1, SMALL), (2, BIG), (3, None)]
            assert cur.description[1].type_code == 17  # bytea
            # extended protocol with a parameter, and a blob function beside the value
            got = cur.execute("SELECT b, blob_size(b), blob_mime(b) FROM files WHERE id = %s",
                              (2,)).fetchone()
            assert got == (BIG, len(BIG), "application/octet-stream")
        with c.cursor().copy("COPY (SELECT b FROM files WHERE id = 1) TO STDOUT") as copy:
            text = b"".join(bytes(chunk) for chunk in copy)
        assert text == b"\\\\x" + SMALL.hex().encode() + b"\n"


def test_bad_blob_arguments_carry_sqlstate(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS bad (b BLOB)")
        c.execute("INSERT INTO bad VALUES ('abc')")
        with pytest.raises(psycopg.Error) as info:
            c.execute("SELECT blob_read(b, 10) FROM bad").fetchall()
        assert info.value.sqlstate == "22023"
        with pytest.raises(psycopg.Error) as info:
            c.execute("INSERT INTO bad SELECT load_file('/no/such/file')")
        assert info.value.sqlstate == "42501"  # outside the folders the server may read
        assert c.execute("SELECT count(*) FROM bad").fetchone() == (1,)


def test_load_file_reads_only_the_allowed_folders(server, incoming):
    (incoming / "ok.txt").write_bytes(b"allowed")
    (incoming / "escape").symlink_to("/etc/hostname")
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS loaded (b BLOB)")
        c.execute(f"INSERT INTO loaded SELECT load_file('{incoming / 'ok.txt'}')")
        assert c.execute("SELECT blob_read(b) FROM loaded").fetchall() == [(b"allowed",)]
        for source, sqlstate in [(incoming / "missing", "58P01"), (incoming / "escape", "42501"),
                                 (f"{incoming}/../{incoming.name}-x", "42501"),
                                 ("/etc/hostname", "42501"), ("http://127.0.0.1:9/x", "42501")]:
            with pytest.raises(psycopg.Error) as info:
                c.execute(f"INSERT INTO loaded SELECT load_file('{source}')")
            assert info.value.sqlstate == sqlstate, source
            if sqlstate == "42501":
                assert "load_file_from" in info.value.diag.message_primary
        assert c.execute("SELECT count(*) FROM loaded").fetchone() == (1,)
