"""BEGIN / COMMIT / ROLLBACK and DB-API commit()/rollback() with autocommit off."""

import multiprocessing as mp
import os
import signal

import pytest

import omnilake
from omnilake import errors as E

from conftest import rows


@pytest.fixture
def two(cur):
    cur.execute("CREATE TABLE a (i INT NOT NULL)")
    cur.execute("CREATE TABLE b (s TEXT)")
    return cur


def test_commit_applies_every_table_and_rollback_none(two):
    two.execute("BEGIN")
    two.execute("INSERT INTO a VALUES (1), (2)")
    two.execute("INSERT INTO b VALUES ('x')")
    assert rows(two, "SELECT count(*) FROM a") == [(2,)]  # its own writes
    two.execute("COMMIT")
    assert two.statusmessage == "COMMIT"
    two.execute("START TRANSACTION")
    two.execute("INSERT INTO a VALUES (3)")
    two.execute("ROLLBACK")
    assert rows(two, "SELECT i FROM a ORDER BY i") == [(1,), (2,)]
    assert rows(two, "SELECT s FROM b") == [("x",)]


def test_error_aborts_until_rollback(two):
    two.execute("BEGIN")
    two.execute("INSERT INTO a VALUES (1)")
    with pytest.raises(E.NotNullViolation):
        two.execute("INSERT INTO a VALUES (NULL)")
    with pytest.raises(E.Error) as info:
        two.execute("SELECT 1")
    assert info.value.sqlstate == "25P02"
    two.execute("COMMIT")  # of a failed transaction: rolls back
    assert two.statusmessage == "ROLLBACK"
    assert rows(two, "SELECT count(*) FROM a") == [(0,)]


def test_ddl_after_a_write_in_a_transaction_is_refused(two):
    two.execute("INSERT INTO a VALUES (1)")
    two.execute("BEGIN")
    two.execute("UPDATE a SET i = 2")
    with pytest.raises(E.NotSupportedError, match="COMMIT first"):
        two.execute("CREATE TABLE c (i INT)")
    two.execute("ROLLBACK")
    two.execute("CREATE TABLE c (i INT)")  # fine outside


def test_update_and_delete_in_a_transaction(warehouse):
    with omnilake.connect(warehouse, flush_interval=3600) as conn, \
            omnilake.connect(warehouse) as other:
        cur = conn.cursor()
        cur.execute("CREATE TABLE a (i INT NOT NULL, s TEXT)")
        cur.execute("CREATE TABLE b (s TEXT)")
        cur.execute("INSERT INTO a VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        conn.flush()
        cur.execute("INSERT INTO a VALUES (4, 'four')")  # pending: only in the memtable
        cur.execute("BEGIN")
        cur.execute("INSERT INTO a VALUES (5, 'five')")
        cur.execute("UPDATE a SET s = upper(s) WHERE i % 2 = 0")
        assert cur.rowcount == 2 and cur.statusmessage == "UPDATE 2"
        cur.execute("DELETE FROM a WHERE i IN (1, 5)")
        assert cur.rowcount == 2
        cur.execute("INSERT INTO a VALUES (6, 'six')")
        cur.execute("INSERT INTO b VALUES ('beside')")
        cur.execute("UPDATE a SET i = i * 10 WHERE s = 'six'")
        expected = [(2, "TWO"), (3, "three"), (4, "FOUR"), (60, "six")]
        assert rows(cur, "SELECT i, s FROM a ORDER BY i") == expected  # its own writes
        assert other.sql("SELECT count(*) FROM a").fetchall() == [(3,)]  # not committed yet
        assert other.sql("SELECT count(*) FROM b").fetchall() == [(0,)]
        with pytest.raises(E.NotNullViolation):  # checked at the statement, as always
            cur.execute("UPDATE a SET i = NULL WHERE i = 2")
        cur.execute("ROLLBACK")
        assert rows(cur, "SELECT i, s FROM a ORDER BY i") == [
            (1, "one"), (2, "two"), (3, "three"), (4, "four")]

        cur.execute("BEGIN")
        cur.execute("UPDATE a SET s = upper(s) WHERE i % 2 = 0")
        cur.execute("DELETE FROM a WHERE i = 1")
        cur.execute("INSERT INTO b VALUES ('beside')")
        cur.execute("COMMIT")
        expected = [(2, "TWO"), (3, "three"), (4, "FOUR")]
        assert rows(cur, "SELECT i, s FROM a ORDER BY i") == expected
        assert rows(cur, "SELECT s FROM b") == [("beside",)]
        assert other.sql("SELECT i, s FROM a ORDER BY i").fetchall() == expected  # committed
        table = conn.session.engine.warehouse.catalog.load_table("public.a")
        assert table.current_snapshot().summary["total-records"] == "3"
    with omnilake.connect(warehouse) as conn:  # nothing doubled or lost by close and reopen
        assert conn.sql("SELECT i, s FROM a ORDER BY i").fetchall() == expected
        assert conn.sql("SELECT s FROM b").fetchall() == [("beside",)]


def test_truncate_and_savepoints_in_a_transaction(two):
    two.execute("INSERT INTO a VALUES (1), (2), (3)")
    two.execute("BEGIN")
    two.execute("DELETE FROM a WHERE i = 1")
    two.execute("SAVEPOINT s1")
    two.execute("TRUNCATE a")
    assert rows(two, "SELECT count(*) FROM a") == [(0,)]
    two.execute("INSERT INTO a VALUES (7)")
    two.execute("ROLLBACK TO SAVEPOINT s1")
    assert rows(two, "SELECT i FROM a ORDER BY i") == [(2,), (3,)]
    two.execute("UPDATE a SET i = i + 100")
    two.execute("COMMIT")
    assert rows(two, "SELECT i FROM a ORDER BY i") == [(102,), (103,)]


@pytest.mark.parametrize("change", [
    "INSERT INTO a VALUES (9)",  # pending in the other engine's memtable, then flushed
    "DELETE FROM a WHERE i = 1",  # a commit
    "UPDATE a SET i = 7 WHERE i = 2",
])
def test_a_concurrent_change_fails_the_commit_and_writes_nothing(warehouse, change):
    with omnilake.connect(warehouse) as conn, omnilake.connect(warehouse) as other:
        cur = conn.cursor()
        cur.execute("CREATE TABLE a (i INT)")
        cur.execute("CREATE TABLE b (i INT)")
        cur.execute("INSERT INTO a VALUES (1), (2)")
        conn.flush()
        cur.execute("BEGIN")
        cur.execute("DELETE FROM a WHERE i = 2")
        cur.execute("INSERT INTO b VALUES (1)")
        other.sql(change)
        other.flush()
        with pytest.raises(E.SerializationFailure) as info:
            cur.execute("COMMIT")
        assert info.value.sqlstate == "40001" and "concurrent update" in str(info.value)
        assert rows(cur, "SELECT count(*) FROM b") == [(0,)]  # all or nothing
        after = other.sql("SELECT i FROM a ORDER BY i").fetchall()
        assert (2,) in after or change.startswith("UPDATE")  # the lost delete stayed lost
        cur.execute("BEGIN")  # the session goes on: the transaction ended with the error
        cur.execute("DELETE FROM a WHERE i = 1")
        cur.execute("COMMIT")
        assert (1,) not in rows(cur, "SELECT i FROM a")


def test_flushes_of_the_rows_read_are_no_conflict(warehouse):
    """The engine's own flushes only move pinned pending rows into the snapshot: COMMIT
    still applies, to the snapshot they made, and nothing is doubled."""
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        conn.sql("CREATE TABLE a (i INT); INSERT INTO a VALUES (1), (2)")
        conn.flush()
        conn.sql("INSERT INTO a VALUES (3)")  # pending when the transaction reads it
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute("UPDATE a SET i = i * 10 WHERE i > 1")
        conn.flush()  # what the background flusher does at any moment
        conn.flush()
        cur.execute("COMMIT")
        assert sorted(rows(cur, "SELECT i FROM a")) == [(1,), (20,), (30,)]
    with omnilake.connect(warehouse) as conn:
        assert sorted(conn.sql("SELECT i FROM a").fetchall()) == [(1,), (20,), (30,)]


def test_rows_written_and_flushed_meanwhile_conflict(warehouse):
    """A flush that committed rows another session wrote after the transaction read the
    table is a change like any other: the overwrite would lose them."""
    from omnilake.engine.engine import Session
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        conn.sql("CREATE TABLE a (i INT); INSERT INTO a VALUES (1)")
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute("UPDATE a SET i = 2")
        Session(conn.session.engine).execute("INSERT INTO a VALUES (5)")
        conn.flush()  # the pinned row and the new one, in one commit
        with pytest.raises(E.SerializationFailure):
            cur.execute("COMMIT")
        assert sorted(rows(cur, "SELECT i FROM a")) == [(1,), (5,)]


def test_pending_rows_of_the_same_engine_conflict_too(warehouse):
    from omnilake.engine.engine import Session
    with omnilake.connect(warehouse, flush_interval=3600) as conn:
        conn.sql("CREATE TABLE a (i INT); INSERT INTO a VALUES (1)")
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute("UPDATE a SET i = 2")
        Session(conn.session.engine).execute("INSERT INTO a VALUES (5)")  # a second session
        with pytest.raises(E.SerializationFailure):
            cur.execute("COMMIT")
        assert sorted(rows(cur, "SELECT i FROM a")) == [(1,), (5,)]


def _commit_and_die(warehouse: str) -> None:
    """COMMIT a transaction with an UPDATE and an INSERT; killed after its WAL record is
    durable and before it reaches Iceberg."""
    from omnilake.engine import writes
    writes.Writer._replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    conn = omnilake.connect(warehouse, flush_interval=3600)
    conn.sql("INSERT INTO a VALUES (3)")  # pending, part of what the UPDATE sees
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("UPDATE a SET i = i * 10")
    cur.execute("INSERT INTO b VALUES (1)")
    cur.execute("COMMIT")


def _crash_mid_commit(warehouse):
    proc = mp.get_context("spawn").Process(target=_commit_and_die, args=(warehouse,))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL


def test_a_crash_mid_commit_recovers_the_whole_transaction(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE a (i INT); CREATE TABLE b (i INT); INSERT INTO a VALUES (1), (2)")
    _crash_mid_commit(warehouse)
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT i FROM a ORDER BY i").fetchall() == [(10,), (20,), (30,)]
        assert conn.sql("SELECT i FROM b").fetchall() == [(1,)]
    with omnilake.connect(warehouse) as conn:  # and only once
        assert conn.sql("SELECT count(*) FROM a").fetchall() == [(3,)]


def test_a_crash_mid_commit_then_a_change_drops_the_whole_transaction(warehouse, caplog):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE a (i INT); CREATE TABLE b (i INT); INSERT INTO a VALUES (1), (2)")
    with omnilake.connect(warehouse) as survivor:
        _crash_mid_commit(warehouse)
        survivor.sql("DELETE FROM a WHERE i = 1")  # the table moves on before recovery
    with omnilake.connect(warehouse) as conn:
        # The COMMIT never returned, and its UPDATE no longer applies: none of it comes back,
        # but the pending row written before the transaction (its own record) does.
        assert conn.sql("SELECT i FROM a ORDER BY i").fetchall() == [(2,), (3,)]
        assert conn.sql("SELECT count(*) FROM b").fetchall() == [(0,)]
    assert "skipped a transaction" in caplog.text


def test_reads_keep_the_first_snapshot(warehouse):
    with omnilake.connect(warehouse) as setup:
        setup.sql("CREATE TABLE r (i INT); INSERT INTO r VALUES (1)")
    with omnilake.connect(warehouse) as reader, omnilake.connect(warehouse) as writer:
        cur = reader.cursor()
        cur.execute("BEGIN")
        assert rows(cur, "SELECT count(*) FROM r") == [(1,)]
        writer.sql("INSERT INTO r VALUES (2)")
        writer.flush()  # committed to Iceberg, visible to new reads
        assert rows(cur, "SELECT count(*) FROM r") == [(1,)]
        cur.execute("COMMIT")
        assert rows(cur, "SELECT count(*) FROM r") == [(2,)]


def test_dbapi_autocommit_off(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE d (i INT)")
        conn.autocommit = False
        cur = conn.cursor()
        cur.execute("INSERT INTO d VALUES (1)")
        conn.rollback()
        cur.execute("INSERT INTO d VALUES (2)")
        conn.commit()
        cur.execute("INSERT INTO d VALUES (3)")  # never committed: close rolls it back
    with omnilake.connect(warehouse) as conn:
        assert conn.sql("SELECT i FROM d").fetchall() == [(2,)]


def test_executemany_follows_transaction_rules(warehouse):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE em (i INT NOT NULL)")
        conn.autocommit = False
        cur = conn.cursor()
        cur.executemany("INSERT INTO em VALUES (%s)", [(1,), (2,)])  # implicit BEGIN
        conn.rollback()
        assert conn.sql("SELECT count(*) FROM em").fetchall() == [(0,)]
        with pytest.raises(E.NotNullViolation):
            cur.executemany("INSERT INTO em VALUES (%s)", [(3,), (None,)])
        with pytest.raises(E.Error) as info:  # the failed transaction takes nothing more
            cur.executemany("INSERT INTO em VALUES (%s)", [(4,)])
        assert info.value.sqlstate == "25P02"
        conn.rollback()
        cur.executemany("INSERT INTO em VALUES (%s)", [(5,)])
        conn.commit()
        assert conn.sql("SELECT i FROM em").fetchall() == [(5,)]
