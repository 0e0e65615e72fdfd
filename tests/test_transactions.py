"""BEGIN / COMMIT / ROLLBACK and DB-API commit()/rollback() with autocommit off."""

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


def test_unsupported_statements_in_a_transaction(two):
    two.execute("BEGIN")
    with pytest.raises(E.NotSupportedError, match="COMMIT first"):
        two.execute("UPDATE a SET i = 2")
    two.execute("ROLLBACK")
    two.execute("UPDATE a SET i = 2")  # fine outside


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
