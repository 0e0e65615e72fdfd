"""Durable writes: kill -9 at random moments, torn and corrupt log tails, a full disk."""

import multiprocessing as mp
import time
import os
import resource
import signal

import pyarrow as pa
import pytest

import omnilake
from omnilake import errors as E
from omnilake.storage.wal import WriteAheadLog, read_log

import crash_trials
from conftest import rows


def test_acknowledged_rows_survive_kill_9(tmp_path):
    tally = crash_trials.run(trials=50, seed=7, warehouse=str(tmp_path / "wh"))
    assert tally["trials"] == 50 and tally["acknowledged"] > 0


def test_rows_are_visible_before_flush_and_survive_reopen(warehouse):
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        conn.sql("CREATE TABLE m (a INT)")
        conn.sql("INSERT INTO m VALUES (1), (2)")
        table = conn.session.engine.warehouse.catalog.load_table("public.m")
        assert table.current_snapshot() is None  # still only in the log and the memtable
        assert conn.sql("SELECT sum(a) FROM m").fetchall() == [(3,)]
        plan = dict(conn.sql("EXPLAIN SELECT * FROM m").fetchall())
        assert "memtable_rows=2" in plan["omnilake_scan"]
    with omnilake.connect(warehouse) as conn:  # closing flushed them
        assert conn.sql("SELECT sum(a) FROM m").fetchall() == [(3,)]
        table = conn.session.engine.warehouse.catalog.load_table("public.m")
        assert len(table.snapshots()) == 1


def test_update_and_time_travel_see_flushed_rows(conn, cur):
    cur.execute("CREATE TABLE u (a INT)")
    cur.execute("INSERT INTO u VALUES (1)")
    cur.execute("UPDATE u SET a = a + 10")  # flushes the pending row, then rewrites it
    assert rows(cur, "SELECT a FROM u") == [(11,)]
    first = conn.session.engine.warehouse.catalog.load_table("public.u").snapshots()[0]
    cur.execute("INSERT INTO u VALUES (5)")  # pending; not part of any older snapshot
    assert rows(cur, f"SELECT a FROM u FOR VERSION AS OF {first.snapshot_id}") == [(1,)]
    assert rows(cur, "SELECT a FROM u ORDER BY a") == [(5,), (11,)]


def _write_and_die(warehouse: str, count: int) -> None:
    conn = omnilake.connect(warehouse, flush_interval=3600)
    for i in range(count):
        conn.sql(f"INSERT INTO torn VALUES ({i})")
    os._exit(0)  # no close: the rows are only in the log


def _log_segments(warehouse: str):
    return sorted((os.path.join(root, f) for root, _, files in os.walk(os.path.join(warehouse, "_wal"))
                   for f in files if f.endswith(".wal")))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_torn_or_corrupt_log_tail_is_skipped(warehouse, damage, caplog):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE torn (i INT)")
    proc = mp.get_context("spawn").Process(target=_write_and_die, args=(warehouse, 5))
    proc.start()
    proc.join()
    (segment,) = _log_segments(warehouse)
    data = bytearray(open(segment, "rb").read())
    if damage == "truncate":
        data = data[:-7]  # the last record loses its end, as in a crash mid-write
    else:
        data[-20] ^= 0xFF  # a flipped bit inside the last record
    open(segment, "wb").write(bytes(data))
    with caplog.at_level("WARNING"):
        with omnilake.connect(warehouse) as conn:
            assert rows(conn.cursor(), "SELECT i FROM torn ORDER BY i") == [(0,), (1,), (2,), (3,)]
    assert "write-ahead log" in caplog.text and ("truncated" in caplog.text or "checksum" in caplog.text)
    assert _log_segments(warehouse) == []  # recovered logs are removed


def test_log_records_round_trip_and_stop_at_damage(tmp_path):
    wal = WriteAheadLog.create(tmp_path, "fsync")
    tables = [pa.table({"a": [i, i + 1]}) for i in range(3)]
    lsns = [wal.append([({"n": i}, t, "k")]) for i, t in enumerate(tables)]
    two = wal.append([({"n": "a"}, tables[0], "k"), ({"n": "b"}, pa.table({"s": ["x"]}), "j")])
    wal.close(remove=lambda: False)
    records = list(read_log(wal.folder))
    assert [r.lsn for r in records] == lsns + [two] == [1, 2, 3, 4]
    assert [r.parts[0][1] for r in records[:3]] == tables
    assert [r.parts[0][0]["n"] for r in records[:3]] == [0, 1, 2]
    assert [meta["n"] for meta, _ in records[3].parts] == ["a", "b"]
    assert records[3].parts[1][1].column("s").to_pylist() == ["x"]
    (segment,) = wal.folder.glob("*.wal")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01  # damage the middle record
    segment.write_bytes(bytes(data))
    assert [r.lsn for r in read_log(wal.folder)] == [1, 2]
    assert [r.lsn for r in read_log(wal.folder)] == [1, 2]  # the damaged tail was cut off


def _fill_disk(warehouse: str, result_path: str) -> None:
    conn = omnilake.connect(warehouse, flush_interval=3600, flush_rows=10**9)
    conn.sql("INSERT INTO full_disk VALUES (-1)")
    (segment,) = _log_segments(warehouse)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(segment) + 4000,) * 2)
    acknowledged, error = [], None
    for i in range(1000):
        try:
            conn.sql(f"INSERT INTO full_disk VALUES ({i})")
            acknowledged.append(i)
        except E.Error as exc:
            error = exc
            break
    visible = [r[0] for r in conn.sql("SELECT i FROM full_disk WHERE i >= 0 ORDER BY i").fetchall()]
    with open(result_path, "w") as out:
        flat = str(error).replace("\n", " ")
        out.write(f"{type(error).__name__}|{getattr(error, 'sqlstate', '')}|{flat}\n")
        out.write(" ".join(map(str, acknowledged)) + "\n" + " ".join(map(str, visible)) + "\n")
    os._exit(0)


def test_full_disk_is_an_operational_error_and_damages_nothing(warehouse, tmp_path):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE full_disk (i INT)")
    result = tmp_path / "result.txt"
    proc = mp.get_context("spawn").Process(target=_fill_disk, args=(warehouse, str(result)))
    proc.start()
    proc.join(120)
    error_line, acked_line, visible_line = result.read_text().splitlines()
    name, sqlstate, message = error_line.split("|", 2)
    assert name == "OperationalError" and sqlstate == "58000"
    assert "write-ahead log" in message and "nothing was written" in message
    acknowledged = [int(x) for x in acked_line.split()]
    assert acknowledged and [int(x) for x in visible_line.split()] == acknowledged
    with omnilake.connect(warehouse) as conn:  # recovery: every acknowledged row, once
        got = [r[0] for r in conn.sql("SELECT i FROM full_disk ORDER BY i").fetchall()]
    assert got == [-1] + acknowledged


def _truncate_and_die(warehouse: str) -> None:
    conn = omnilake.connect(warehouse, flush_interval=3600)
    conn.sql("INSERT INTO tr VALUES (1), (2)")
    conn.sql("TRUNCATE tr")
    conn.sql("INSERT INTO tr VALUES (3)")
    os._exit(0)  # the log still holds all three inserts


def test_truncated_rows_do_not_come_back_after_a_crash(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE tr (i INT)")
    proc = mp.get_context("spawn").Process(target=_truncate_and_die, args=(warehouse,))
    proc.start()
    proc.join()
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT i FROM tr").fetchall() == [(3,)]


def test_concurrent_inserts_during_update_are_neither_lost_nor_doubled(warehouse):
    import threading
    with omnilake.connect(warehouse, flush_rows=20, flush_interval=0.05) as conn:
        conn.sql("CREATE TABLE cu (id INT, v INT)")
        inserter, updater = conn.session.engine.session(), conn.session.engine.session()
        stop, inserted = threading.Event(), []

        def insert_loop():
            i = 0
            while not stop.is_set():
                inserter.execute(f"INSERT INTO cu VALUES ({i}, 0)")
                inserted.append(i)
                i += 1

        thread = threading.Thread(target=insert_loop)
        thread.start()
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                updater.execute("UPDATE cu SET v = v + 1 WHERE id % 2 = 0")
            except E.SerializationFailure:
                pass  # lost to a flush commit: nothing changed, try again
        stop.set()
        thread.join()
        ids = [r[0] for r in conn.sql("SELECT id FROM cu").fetchall()]
        assert sorted(ids) == sorted(inserted)


def test_insert_into_a_table_altered_meanwhile_is_refused(warehouse):
    with omnilake.connect(warehouse) as a, omnilake.connect(warehouse) as b:
        a.sql("CREATE TABLE al (x INT, y INT)")
        cur = a.cursor()
        cur.execute("BEGIN")
        cur.execute("INSERT INTO al VALUES (1, 2)")
        b.sql("ALTER TABLE al DROP COLUMN y")
        with pytest.raises(E.SerializationFailure, match="altered"):
            cur.execute("COMMIT")
        cur.execute("ROLLBACK")
        cur.execute("INSERT INTO al VALUES (3)")
    with omnilake.connect(warehouse) as c:
        assert c.sql("SELECT * FROM al").fetchall() == [(3,)]


def test_rows_follow_a_table_renamed_by_another_process(warehouse):
    with omnilake.connect(warehouse) as setup:
        setup.sql("CREATE TABLE old_name (i INT)")
    with omnilake.connect(warehouse, flush_interval=3600) as writer:
        writer.sql("INSERT INTO old_name VALUES (1), (2), (3)")  # acknowledged, pending
        with omnilake.connect(warehouse) as other:
            other.sql("ALTER TABLE old_name RENAME TO new_name")
    with omnilake.connect(warehouse) as reader:
        assert reader.sql("SELECT count(*) FROM new_name").fetchall() == [(3,)]


def test_a_failed_flush_after_acknowledgement_does_not_fail_the_insert(warehouse, caplog):
    import sqlite3
    with omnilake.connect(warehouse) as setup:
        setup.sql("CREATE TABLE busy (i INT)")
    with omnilake.connect(warehouse, flush_rows=1, flush_interval=3600) as conn:
        blocker = sqlite3.connect(os.path.join(warehouse, "catalog.db"), timeout=0)
        blocker.execute("BEGIN IMMEDIATE")  # readers go on, commits wait
        try:
            with caplog.at_level("WARNING"):
                conn.sql("INSERT INTO busy VALUES (42)")  # acknowledged; its flush failed
        finally:
            blocker.rollback()
            blocker.close()
        assert "retried later" in caplog.text
        assert conn.sql("SELECT i FROM busy").fetchall() == [(42,)]
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT i FROM busy").fetchall() == [(42,)]


def test_small_writes_merge_in_the_memtable(warehouse):
    """Single-row INSERTs join the previous pending table (up to MERGE_ROWS rows), so a scan
    does not cast and union thousands of one-row tables; rows and their order stay."""
    from omnilake.storage.memtable import MERGE_ROWS
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE sm (i INT, s TEXT)")
        for i in range(300):
            cur.execute("INSERT INTO sm VALUES (%s, %s)", (i, f"r{i}"))
        conn.insert("sm", pa.table({"i": pa.array(range(300, 300 + MERGE_ROWS), pa.int32()),
                                    "s": [f"r{i}" for i in range(300, 300 + MERGE_ROWS)]}))
        cur.execute("INSERT INTO sm VALUES (-1, NULL)")
        pending = conn.session.engine.writer.memtable.rows("public.sm")
        assert [t.num_rows for t in pending] == [300, MERGE_ROWS, 1]
        assert rows(cur, "SELECT count(*), sum(i), count(s) FROM sm") == [
            (301 + MERGE_ROWS, sum(range(300 + MERGE_ROWS)) - 1, 300 + MERGE_ROWS)]
    with omnilake.connect(warehouse) as conn:  # replayed or flushed: the same rows
        assert conn.sql("SELECT count(*) FROM sm").fetchall() == [(301 + MERGE_ROWS,)]


def _open_without_permission(warehouse: str, result_path: str) -> None:
    connect = omnilake.connect  # loads the engine's modules while the interpreter's are readable
    if os.getuid() == 0:  # root ignores file modes: become nobody
        os.setgid(65534)
        os.setuid(65534)
    try:
        connect(warehouse).close()
        outcome = "opened"
    except E.Error as exc:
        outcome = f"{type(exc).__name__}|{exc.sqlstate}|{exc}".replace("\n", " ")
    except Exception as exc:  # anything else is a defect the test reports
        outcome = f"{type(exc).__name__}|-|{exc}".replace("\n", " ")
    with open(result_path, "w") as out:
        out.write(outcome)
    os._exit(0)


def test_an_unwritable_log_is_an_operational_error_and_damages_nothing():
    import shutil
    import stat
    import tempfile
    folder = tempfile.mkdtemp(prefix="omnilake-perm-")  # outside pytest's private folder
    warehouse = os.path.join(folder, "wh")
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE torn (i INT)")
    proc = mp.get_context("spawn").Process(target=_write_and_die, args=(warehouse, 5))
    proc.start()
    proc.join(120)
    # Everything may be written by anyone but the log folder: only its owner may write there.
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | stat.S_IRWXO | stat.S_IRWXG)
    os.chmod(folder, 0o777)
    wal = os.path.join(warehouse, "_wal")
    for root, dirs, files in os.walk(wal):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
    os.chmod(wal, 0o555)
    result = os.path.join(folder, "result.txt")
    proc = mp.get_context("spawn").Process(target=_open_without_permission, args=(warehouse, result))
    proc.start()
    proc.join(120)
    name, sqlstate, message = open(result).read().split("|", 2)
    assert name == "OperationalError" and sqlstate.startswith("58"), message
    assert "ermission denied" in message and "_wal" in message
    for root, dirs, _ in os.walk(wal):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    os.chmod(wal, 0o755)
    with omnilake.connect(warehouse) as conn:  # the acknowledged rows are all there, once
        assert conn.sql("SELECT i FROM torn ORDER BY i").fetchall() == [(i,) for i in range(5)]
    shutil.rmtree(folder)
