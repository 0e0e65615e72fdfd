"""Key lookups answered where nothing may wait (storage/memory_only.py): the wire server's
event loop answers a prepared lookup (and parses an unnamed one again) when its table, files
and rows are in memory, and every step that would wait (a table not loaded or changed, a
locked catalog, the memtable lock held by a writer or a flush, memtable rows not yet cast, a
large memtable, many files, batch bounds not worked out yet) says so instead, so the
statement goes to a statement thread. The answers are the same either way."""

from __future__ import annotations

import sqlite3
import struct
import threading
import time

import pyarrow as pa
import pytest

import omnilake
from omnilake.storage import memory_only

psycopg = pytest.importorskip("psycopg")

from wire_messages import connect, message, parse, read_messages, rows  # noqa: E402
from wire_server import in_process_server  # noqa: E402

POINT = "SELECT val FROM kv WHERE id = %s"


def _fill(conn, rows: int = 20_000) -> None:
    conn.cursor().execute("CREATE TABLE kv (id BIGINT, val TEXT)")
    conn.insert("kv", pa.table({"id": pa.array(range(rows), pa.int64()),
                                "val": [f"v{i}" for i in range(rows)]}))
    conn.flush()


def _warm(conn) -> None:
    """Load the table and hold its file in the column cache, as a few queries do."""
    for _ in range(2):
        conn.cursor().execute("SELECT * FROM kv")
    for key in (1, 2):
        conn.cursor().execute(POINT, (key,))


def _in_memory(conn, key: int):
    """The lookup's rows where nothing may wait."""
    lookup = conn.session.planned_lookup(POINT)
    with memory_only.only():
        result = conn.session.lookup(lookup, (key,))
    return result.table.to_pylist()


def test_a_lookup_in_memory_answers_and_each_step_that_would_wait_says_so(tmp_path, monkeypatch):
    warehouse = str(tmp_path / "wh")
    writer = omnilake.connect(warehouse)
    _fill(writer)
    reader = omnilake.connect(warehouse)  # an engine of its own: nothing loaded or cached
    with pytest.raises(memory_only.WouldWait, match="metadata"):
        _in_memory(reader, 5)
    _warm(reader)
    assert _in_memory(reader, 5) == [{"val": "v5"}]
    assert _in_memory(reader, 19_999) == [{"val": "v19999"}]
    assert _in_memory(reader, 20_000) == []

    # the memtable lock, as a flush holds it through its commit
    engine = reader.session.engine
    lock = engine.writer.memtable.lock("public.kv")
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(30)
    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    try:
        with pytest.raises(memory_only.WouldWait, match="memtable lock"):
            _in_memory(reader, 5)
    finally:
        release.set()
        holder.join(30)
    assert _in_memory(reader, 5) == [{"val": "v5"}]

    # rows written since: first cast on a statement thread, then read in memory
    reader.cursor().execute("INSERT INTO kv VALUES (5, 'again')")
    with pytest.raises(memory_only.WouldWait, match="memtable rows"):
        _in_memory(reader, 5)
    reader.cursor().execute(POINT, (5,))
    assert sorted(r["val"] for r in _in_memory(reader, 5)) == ["again", "v5"]
    monkeypatch.setattr(memory_only, "MAX_ROWS", 0)  # a memtable too large
    with pytest.raises(memory_only.WouldWait, match="large memtable"):
        _in_memory(reader, 5)
    monkeypatch.undo()

    # another engine commits: the table must be loaded again
    writer.cursor().execute("INSERT INTO kv VALUES (7, 'seven')")
    writer.flush()
    with pytest.raises(memory_only.WouldWait, match="metadata"):
        _in_memory(reader, 7)
    _warm(reader)
    reader.cursor().execute(POINT, (7,))  # (the new file's batch bounds)
    assert sorted(r["val"] for r in _in_memory(reader, 7)) == ["seven", "v7"]
    writer.close()
    reader.close()


def test_a_locked_catalog_many_files_and_new_batch_bounds_would_wait(tmp_path, monkeypatch):
    warehouse = str(tmp_path / "wh")
    writer = omnilake.connect(warehouse)
    _fill(writer)
    reader = omnilake.connect(warehouse)
    for _ in range(2):
        reader.cursor().execute("SELECT * FROM kv")  # loaded and cached, no lookup yet
    with pytest.raises(memory_only.WouldWait, match="batch bounds"):
        _in_memory(reader, 5)  # min/max of every batch: worked out once, off the loop
    reader.cursor().execute(POINT, (5,))
    assert _in_memory(reader, 5) == [{"val": "v5"}]
    monkeypatch.setattr(memory_only, "MAX_FILES", 0)
    with pytest.raises(memory_only.WouldWait, match="many data files"):
        _in_memory(reader, 5)
    monkeypatch.undo()

    # a writer holding the catalog locked (rollback journal): no wait for the lock
    catalog = reader.session.engine.warehouse.catalog.engine.url.database
    locker = sqlite3.connect(catalog, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(memory_only.WouldWait, match="locked"):
            _in_memory(reader, 5)
        assert time.monotonic() - started < 5  # (others wait up to 30 s)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert _in_memory(reader, 5) == [{"val": "v5"}]
    writer.close()
    reader.close()


def test_only_nests():
    assert not memory_only.active()
    with memory_only.only():
        with memory_only.only():
            assert memory_only.active()
        assert memory_only.active()
        with pytest.raises(memory_only.WouldWait, match="x"):
            memory_only.check(False, "x")
    assert not memory_only.active()
    memory_only.check(False, "outside only(): nothing raised")


def test_outside_only_nothing_changes(tmp_path):
    """The checks are silent where waiting is allowed: a cold engine answers as usual."""
    warehouse = str(tmp_path / "wh")
    writer = omnilake.connect(warehouse)
    _fill(writer, 100)
    writer.close()
    reader = omnilake.connect(warehouse)
    cur = reader.cursor()
    cur.execute(POINT, (42,))
    assert cur.fetchall() == [("v42",)]
    assert not memory_only.active()
    reader.close()


@pytest.fixture
def server(tmp_path):
    with in_process_server(str(tmp_path / "wh")) as srv:
        yield srv


def test_prepared_lookups_are_answered_on_the_loop_once_in_memory(server):
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        c.execute("CREATE TABLE kv (id BIGINT, val TEXT)")
        with c.cursor().copy("COPY kv FROM STDIN") as copy:
            copy.write("".join(f"{i}\tv{i}\n" for i in range(20_000)))
        server.engine.writer.flush("public", "kv")
        for _ in range(2):
            c.execute("SELECT * FROM kv").fetchall()
        for key in range(5):  # the first ones cache what the lookup reads
            assert c.execute(POINT, (key,), prepare=True).fetchall() == [(f"v{key}",)]
        trips = len(server.trips)
        for key in [7, 19_999, 20_000, -1, 123]:
            expected = [] if key in (20_000, -1) else [(f"v{key}",)]
            assert c.execute(POINT, (key,), prepare=True).fetchall() == expected
        assert len(server.trips) == trips  # no statement thread needed
        c.execute("INSERT INTO kv VALUES (7, 'again')")
        trips = len(server.trips)
        assert sorted(c.execute(POINT, (7,), prepare=True).fetchall()) == [("again",), ("v7",)]
        assert len(server.trips) == trips + 1  # the new rows are cast on a statement thread
        assert sorted(c.execute(POINT, (7,), prepare=True).fetchall()) == [("again",), ("v7",)]
        assert len(server.trips) == trips + 1


def test_a_lookup_that_would_wait_for_a_flush_leaves_the_loop_to_others(server):
    """While a flush holds the table's memtable lock, a lookup goes to a statement thread and
    waits there; another client's statements are answered meanwhile."""
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        c.execute("CREATE TABLE kv (id BIGINT, val TEXT)")
        c.execute("INSERT INTO kv VALUES (1, 'one')")
        for _ in range(3):
            assert c.execute(POINT, (1,), prepare=True).fetchall() == [("one",)]
        lock = server.engine.writer.memtable.lock("public.kv")
        answers = []
        with lock:
            waiting = threading.Thread(
                target=lambda: answers.append(c.execute(POINT, (1,), prepare=True).fetchall()))
            waiting.start()
            with psycopg.connect(server.conninfo, autocommit=True, connect_timeout=10) as other:
                started = time.monotonic()
                assert other.execute("SELECT 2").fetchall() == [(2,)]
            assert time.monotonic() - started < 10
            assert answers == []  # still waiting for the lock
        waiting.join(30)
        assert answers == [[("one",)]]


def test_a_prepared_vector_search_still_runs_on_a_statement_thread(server):
    """A search planned from its text is not a key lookup: its work grows with the table, so
    it never runs on the event loop."""
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        c.execute("CREATE TABLE emb (id BIGINT, v VECTOR(3))")
        c.execute("INSERT INTO emb VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]')")
        search = "SELECT id FROM emb ORDER BY v <-> %s::vector LIMIT 2"
        for _ in range(3):
            c.execute(search, ("[0,1,0.1]",), prepare=True).fetchall()
        trips = len(server.trips)
        for _ in range(3):
            assert c.execute(search, ("[0,1,0.1]",), prepare=True).fetchall() == [(2,), (3,)]
        assert len(server.trips) == trips + 3


def _parameter_oids(sock, sql: bytes) -> tuple:
    """Parse `sql` unnamed and Describe it: its parameters' type OIDs."""
    sock.sendall(parse(b"", sql) + message(b"D", b"S\0") + message(b"S", b""))
    body = next(body for kind, body in read_messages(sock) if kind == b"t")
    count = struct.unpack("!h", body[:2])[0]
    return struct.unpack(f"!{count}I", body[2:])


def test_unnamed_lookups_are_parsed_again_on_the_loop_with_their_types_inferred_again(server):
    """An unnamed statement is parsed at each execution (psycopg's first executions of a
    text, node-postgres always). A key lookup parsed before is parsed again on the event loop,
    its parameter types inferred again from the table as it is now."""
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        c.execute("CREATE TABLE kv (id BIGINT, val TEXT)")
        c.execute("INSERT INTO kv VALUES (1, 'one'), (2, 'two')")
        for key in (1, 2, 1):  # the first parse and the first lookups on a statement thread
            c.execute(POINT, (key,), prepare=False).fetchall()
        trips = len(server.trips)
        for key, expected in [(1, [("one",)]), (2, [("two",)]), (3, [])]:
            assert c.execute(POINT, (key,), prepare=False).fetchall() == expected
        assert len(server.trips) == trips  # Parse and lookup, both on the loop
    sock = connect(server)
    dollar = b"SELECT val FROM kv WHERE id = $1"
    assert _parameter_oids(sock, dollar) == (20,)  # bigint
    assert _parameter_oids(sock, dollar) == (20,)  # (parsed again on the loop)
    with psycopg.connect(server.conninfo, autocommit=True) as c:
        c.execute("DROP TABLE kv")
        c.execute("CREATE TABLE kv (id TEXT, val TEXT)")
        c.execute("INSERT INTO kv VALUES ('a', 'text key')")
    assert _parameter_oids(sock, dollar) == (25,)  # text now
    assert _parameter_oids(sock, dollar) == (25,)
    sock.sendall(parse(b"", dollar) + message(b"B", b"\0\0\0\0\0\1\0\0\0\1a\0\0")
                 + message(b"E", b"\0\0\0\0\0") + message(b"S", b""))
    assert rows(read_messages(sock)) == [[b"text key"]]
    sock.close()
