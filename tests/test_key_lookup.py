"""Key lookups answered from the column cache (engine/key_lookup.py) give the rows, names,
types and field metadata that DataFusion gives for the same statement, whatever state the
table is in: memtable only, flushed, cached, cached plus newer rows, after DELETE and UPDATE,
inside a transaction; and statements that do not qualify still run."""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow as pa

import pytest

import omnilake
from omnilake.engine import key_lookup

from conftest import fast_and_general

STATEMENTS = [
    "SELECT * FROM t WHERE id = 5",
    "SELECT name, price FROM t WHERE id = 5",
    "SELECT name AS n, t.id, ts FROM t WHERE t.id = 7",
    "SELECT x.name, x.flag, x.amount FROM t x WHERE x.id = 7 AND x.name = 'n7'",
    "SELECT id, u, js FROM t WHERE name = 'n3'",
    "SELECT id FROM t WHERE tag = 'rare'",
    "SELECT id, name FROM t WHERE k = -3",
    "SELECT id FROM t WHERE s = 100000",  # beyond SMALLINT: no row
    "SELECT id FROM t WHERE id = 999999",
    "SELECT id FROM t WHERE 9 = id",
    "SELECT id, name FROM t WHERE name = 'nobody'",
    "SELECT d, b, tm, tsn, r, ch FROM t WHERE id = 6",
    "SELECT id FROM t WHERE tag = 'common'",  # more rows than a lookup slices: DataFusion
]


def _sorted(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=repr)


def _compare(conn, monkeypatch, sql, params=None):
    """The statement's result through the lookup and through DataFusion, compared whole;
    returns whether the lookup answered."""
    cur = conn.cursor()

    def run():
        cur.execute(sql, params)
        return cur.fetch_arrow_table()
    fast, slow, served = fast_and_general(monkeypatch, key_lookup, run)
    assert fast.schema.equals(slow.schema, check_metadata=True), (sql, fast.schema, slow.schema)
    assert _sorted(fast) == _sorted(slow), sql
    return served


def _load(conn, ids):
    cur = conn.cursor()
    for i in ids:
        cur.execute(
            "INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s)",
            (i, -(i % 5), i % 300, None if i % 11 == 0 else f"n{i}",
             "rare" if i == 42 else "common", i / 4, f"{i}.25", f"2024-01-{i % 28 + 1:02d} 10:00:00+00",
             i % 2 == 0, str(uuid.UUID(int=i)), f'{{"i": {i}}}', f"[{i},0,1]",
             f"2024-02-{i % 28 + 1:02d}", bytes([i % 256, 0]), dt.time(10, i % 60),
             f"2024-03-01 00:00:{i % 60:02d}", i / 8, f"c{i % 10}"))


@pytest.fixture
def conn(tmp_path):
    c = omnilake.connect(str(tmp_path / "wh"))
    c.cursor().execute(
        "CREATE TABLE t (id BIGINT, k INTEGER, s SMALLINT, name TEXT, tag VARCHAR(10), "
        "price DOUBLE PRECISION, amount NUMERIC(10,2), ts TIMESTAMPTZ, flag BOOLEAN, u UUID, "
        "js JSON, v VECTOR(3), d DATE, b BYTEA, tm TIME, tsn TIMESTAMP, r REAL, ch CHAR(3))")
    yield c
    c.close()


def _all(conn, monkeypatch):
    return [_compare(conn, monkeypatch, sql) for sql in STATEMENTS]


def test_lookups_equal_datafusion_in_every_table_state(conn, monkeypatch):
    _load(conn, range(300))
    _all(conn, monkeypatch)  # memtable rows only
    conn.flush()
    _all(conn, monkeypatch)  # the first scans admit the file to the column cache
    served = _all(conn, monkeypatch)
    assert served[:-1] == [True] * (len(STATEMENTS) - 1)  # the last matches too many rows
    assert served[-1] is False
    _load(conn, range(300, 320))  # newer rows in the memtable, beside the cached file
    conn.cursor().execute("INSERT INTO t (id, name) VALUES (5, 'again'), (7, NULL)")
    assert _all(conn, monkeypatch)[0] is True
    conn.cursor().execute("DELETE FROM t WHERE id = 9")
    conn.cursor().execute("UPDATE t SET name = 'renamed' WHERE id = 3")
    for _ in range(2):
        _all(conn, monkeypatch)
    cur = conn.cursor()
    cur.execute("SELECT id FROM t WHERE id = 9")
    assert cur.fetchall() == []
    cur.execute("SELECT name FROM t WHERE id = 3")
    assert cur.fetchall() == [("renamed",)]


def test_parameters_and_a_transactions_own_rows(conn, monkeypatch):
    _load(conn, range(50))
    conn.flush()
    for _ in range(2):
        _compare(conn, monkeypatch, "SELECT name FROM t WHERE id = %s", (4,))
    assert _compare(conn, monkeypatch, "SELECT name FROM t WHERE id = %s", (4,))
    assert _compare(conn, monkeypatch, "SELECT id FROM t WHERE name = %s", ("n8",))
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("INSERT INTO t (id, name) VALUES (4, 'mine')")
    cur.execute("SELECT name FROM t WHERE id = 4")
    assert sorted(cur.fetchall()) == [("mine",), ("n4",)]
    _compare(conn, monkeypatch, "SELECT name FROM t WHERE id = 4")
    conn.rollback()
    cur.execute("SELECT name FROM t WHERE id = 4")
    assert cur.fetchall() == [("n4",)]


@pytest.mark.parametrize("sql", [
    "SELECT id FROM t WHERE id = 4 OR id = 5",
    "SELECT id FROM t WHERE id > 4",
    "SELECT id FROM t WHERE id = 4.0",
    "SELECT id FROM t WHERE id = '4'",
    "SELECT id FROM t WHERE flag = true",
    "SELECT id FROM t WHERE price = 1",
    "SELECT id FROM t WHERE id = NULL",
    "SELECT id + 1 FROM t WHERE id = 4",
    "SELECT id, id FROM t WHERE id = 4",
    "SELECT v FROM t WHERE id = 4",
    "SELECT count(*) FROM t WHERE id = 4",
    "SELECT id FROM t WHERE id = 4 LIMIT 1",
    "SELECT DISTINCT id FROM t WHERE id = 4",
    "SELECT id FROM t WHERE id = 4 ORDER BY id",
    "SELECT a.id FROM t a JOIN t b ON a.id = b.id WHERE a.id = 4",
    "SELECT a FROM t x (a) WHERE a = 4",
])
def test_other_statements_run_as_before(conn, monkeypatch, sql):
    _load(conn, range(20))
    conn.flush()
    for _ in range(2):
        conn.cursor().execute("SELECT * FROM t")  # the file is cached
    assert not _compare(conn, monkeypatch, sql)


@pytest.mark.parametrize("sql, error", [
    ("SELECT nope FROM t WHERE id = 1", "nope"),
    ("SELECT id FROM t WHERE nope = 1", "nope"),
    ("SELECT id FROM missing WHERE id = 1", "missing"),
])
def test_bad_lookups_get_the_usual_errors(conn, sql, error):
    _load(conn, range(5))
    conn.flush()
    for _ in range(2):
        conn.cursor().execute("SELECT * FROM t")
    with pytest.raises(omnilake.Error, match=error):
        conn.cursor().execute(sql)


def test_explain_names_the_lookup_and_names_fold_as_in_postgres(conn, monkeypatch):
    _load(conn, range(20))
    conn.flush()
    cur = conn.cursor()
    for _ in range(2):
        cur.execute("SELECT * FROM t")
    assert _compare(conn, monkeypatch, 'SELECT NAME, Id AS "Key" FROM T WHERE ID = 5')
    cur.execute("EXPLAIN SELECT name FROM t WHERE id = 5")
    plan = cur.fetchall()
    assert plan == [("omnilake_result", "KeyLookup: columns=[name] rows=1 matched in the "
                     "column cache and the memtable (no DataFusion plan)")]
    cur.execute("EXPLAIN SELECT name FROM t WHERE id > 5")
    assert "KeyLookup" not in str(cur.fetchall())


def test_many_files_and_chunks_are_pruned_by_their_bounds(tmp_path, monkeypatch):
    """Two flushed files of 100k rows each (two cached chunks apiece), sorted and shuffled
    keys, an integer column with all-NULL chunks: every lookup finds what DataFusion finds."""
    import numpy as np
    c = omnilake.connect(str(tmp_path / "wh"))
    c.cursor().execute("CREATE TABLE big (id BIGINT, g INTEGER, name TEXT)")
    rng = np.random.default_rng(7)
    for ids in [np.arange(100_000), rng.permutation(100_000) + 100_000]:
        g = pa.array(ids // 1000, pa.int32(), mask=ids < 70_000)  # NULL in the first chunks
        c.insert("big", pa.table({"id": pa.array(ids, pa.int64()), "g": g,
                                  "name": pa.array([f"n{i}" for i in ids])}))
        c.flush()
    for _ in range(2):
        c.cursor().execute("SELECT id, g, name FROM big")  # both files cached
    checks = ["SELECT name FROM big WHERE id = {}".format(i)
              for i in (0, 65_535, 65_536, 99_999, 100_000, 150_001, 199_999, 200_000, -1)]
    checks += ["SELECT id FROM big WHERE g = 5", "SELECT id FROM big WHERE g = 80",
               "SELECT id FROM big WHERE g = 80 AND id = 80_500".replace("_", ""),
               "SELECT id FROM big WHERE name = 'n150001'", "SELECT g FROM big WHERE id = 150001"]
    served = [_compare(c, monkeypatch, sql) for sql in checks]
    assert served[-1] and served[0] and served[5]
    c.close()


@pytest.mark.parametrize("sql, params, served", [
    ("SELECT name FROM t WHERE id = %s", (4,), True),
    ("SELECT name FROM t WHERE id = $1", (4,), True),
    ("SELECT name FROM t WHERE name = $2 AND id = $1", (4, "n4"), True),
    ("SELECT name FROM t WHERE id = %s AND name = %s", (4, "n4"), True),
    ("SELECT name FROM t WHERE id = %(k)s", {"k": 4}, True),  # named: bound, then looked up
    ("SELECT name FROM t WHERE id = %s", (None,), False),  # `= NULL`: no row either way
    ("SELECT name FROM t WHERE id = %s", (True,), False),
    ("SELECT name FROM t WHERE id = %s", (2 ** 70,), False),
])
def test_parameters_take_the_lookup_where_their_type_is_the_keys(conn, monkeypatch, sql, params,
                                                                  served):
    _load(conn, range(20))
    conn.flush()
    for _ in range(2):
        conn.cursor().execute("SELECT * FROM t")
    try:
        assert _compare(conn, monkeypatch, sql, params) is served
    except omnilake.Error:
        assert not served  # (the general path's error, e.g. a value out of range)


@pytest.mark.parametrize("sql, params", [
    ("SELECT name FROM t WHERE id = %s", ()),
    ("SELECT name FROM t WHERE id = %s", (1, 2)),
    ("SELECT name FROM t WHERE id = $2", (1,)),
])
def test_wrong_parameter_counts_get_the_usual_errors(conn, sql, params):
    _load(conn, range(5))
    conn.flush()
    for _ in range(2):
        conn.cursor().execute("SELECT * FROM t")
    with pytest.raises(omnilake.ProgrammingError, match="parameter"):
        conn.cursor().execute(sql, params)


def test_a_table_with_a_blob_column_is_read_the_general_way(tmp_path, monkeypatch):
    c = omnilake.connect(str(tmp_path / "wh"))
    c.cursor().execute("CREATE TABLE docs (id BIGINT, body BLOB)")
    c.cursor().execute("INSERT INTO docs VALUES (1, 'hello'::bytea), (2, 'world'::bytea)")
    c.flush()
    for _ in range(2):
        c.cursor().execute("SELECT id FROM docs")
    assert not _compare(c, monkeypatch, "SELECT * FROM docs WHERE id = 1")
    assert not _compare(c, monkeypatch, "SELECT body FROM docs WHERE id = 1")
    assert _compare(c, monkeypatch, "SELECT id FROM docs WHERE id = 1")
    c.close()


def test_a_failed_transaction_refuses_lookups_too(conn):
    _load(conn, range(5))
    conn.flush()
    for _ in range(2):
        conn.cursor().execute("SELECT * FROM t")
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("SELECT name FROM t WHERE id = %s", (1,))
    assert cur.fetchall() == [("n1",)]
    with pytest.raises(omnilake.Error):
        cur.execute("SELECT 1 / 0")
    with pytest.raises(omnilake.Error, match="current transaction is aborted"):
        cur.execute("SELECT name FROM t WHERE id = %s", (1,))
    conn.rollback()
    cur.execute("SELECT name FROM t WHERE id = %s", (1,))
    assert cur.fetchall() == [("n1",)]


def test_lookups_while_rows_are_written_and_flushed(tmp_path):
    """Readers look up keys already written while a writer adds keys and flushes: every
    lookup of a written key finds exactly its row, whichever of memtable and files holds it."""
    import threading
    c = omnilake.connect(str(tmp_path / "wh"))
    c.cursor().execute("CREATE TABLE kv (id BIGINT, val TEXT)")
    written = [0]
    stop = threading.Event()
    failures = []

    def writer():
        cur = c.cursor()
        for start in range(0, 3000, 100):
            cur.executemany("INSERT INTO kv VALUES (%s, %s)",
                            [(i, f"v{i}") for i in range(start, start + 100)])
            written[0] = start + 100
            if start % 500 == 0:
                c.flush()
                cur.execute("SELECT count(*) FROM kv WHERE val <> ''")  # admits the files
        stop.set()

    def reader(seed):
        import random
        rng = random.Random(seed)
        cur = c.cursor()
        while not stop.is_set():
            key = rng.randrange(written[0]) if written[0] else 0
            if not written[0]:
                continue
            cur.execute("SELECT val FROM kv WHERE id = %s", (key,))
            got = cur.fetchall()
            if got != [(f"v{key}",)]:
                failures.append((key, got))
    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    c.close()
    assert not failures, failures[:5]


def test_lookups_on_a_local_folder_and_on_s3(any_warehouse, monkeypatch):
    """The same lookups over a warehouse on S3 (moto_server): its files are read through the
    read cache into the column cache, then looked up there."""
    c = omnilake.connect(**any_warehouse)
    c.cursor().execute("CREATE TABLE kv (id BIGINT, val TEXT)")
    c.insert("kv", pa.table({"id": pa.array(range(5000), pa.int64()),
                             "val": [f"v{i}" for i in range(5000)]}))
    c.flush()
    c.insert("kv", pa.table({"id": pa.array([7, 5001], pa.int64()), "val": ["again", "new"]}))
    for _ in range(2):
        c.cursor().execute("SELECT id, val FROM kv")
    assert _compare(c, monkeypatch, "SELECT val FROM kv WHERE id = %s", (7,))
    assert _compare(c, monkeypatch, "SELECT id FROM kv WHERE val = %s", ("v4321",))
    cur = c.cursor()
    cur.execute("SELECT val FROM kv WHERE id = %s", (7,))
    assert sorted(cur.fetchall()) == [("again",), ("v7",)]
    c.close()


def test_an_empty_table_and_a_memtable_only_table(tmp_path, monkeypatch):
    c = omnilake.connect(str(tmp_path / "wh"))
    c.cursor().execute("CREATE TABLE e (id BIGINT, val TEXT)")
    assert _compare(c, monkeypatch, "SELECT * FROM e WHERE id = %s", (1,))
    c.cursor().execute("INSERT INTO e VALUES (1, 'one'), (2, NULL)")
    assert _compare(c, monkeypatch, "SELECT * FROM e WHERE id = %s", (2,))
    cur = c.cursor()
    cur.execute("SELECT val FROM e WHERE id = %s", (1,))
    assert cur.fetchall() == [("one",)]
    c.close()


def test_random_keys_looked_up_again_use_the_chunks_indexes(tmp_path, monkeypatch):
    """Shuffled keys with duplicates in a flushed file: the first lookup of a chunk scans it,
    the next ones search its index; every answer equals DataFusion's, composite keys and
    rows written since the flush included."""
    import numpy as np
    from omnilake.engine import key_index
    indexes = key_index.KeyIndexes()
    monkeypatch.setattr(key_index, "KEY_INDEXES", indexes)
    c = omnilake.connect(str(tmp_path / "wh"))
    c.cursor().execute("CREATE TABLE r (id BIGINT, name TEXT)")
    rng = np.random.default_rng(3)
    ids = np.concatenate([rng.permutation(60_000) * 3, [42, 42, 300_000]])
    c.insert("r", pa.table({"id": pa.array(ids, pa.int64()),
                            "name": pa.array([f"n{i % 7}" for i in range(len(ids))])}))
    c.flush()
    for _ in range(2):
        c.cursor().execute("SELECT id, name FROM r")  # the file cached
    c.cursor().execute("INSERT INTO r VALUES (42, 'late'), (7, 'late')")  # memtable rows
    checks = ["SELECT id, name FROM r WHERE id = 42", "SELECT name FROM r WHERE id = 300000",
              "SELECT name FROM r WHERE id = 7", "SELECT name FROM r WHERE id = 8",
              "SELECT id FROM r WHERE id = 42 AND name = 'late'",
              "SELECT id FROM r WHERE name = 'n3' AND id = 42"]
    for _ in range(3):  # scan, then index
        assert all(_compare(c, monkeypatch, sql) for sql in checks)
    assert indexes._indexes  # the file's chunks have indexes now
    c.close()


def test_a_statement_run_again_follows_the_tables_schema_changes(tmp_path, monkeypatch):
    """What a lookup reads is worked out once per table version: after a column is renamed,
    added or dropped, the same statement text reads the new columns (or fails as the
    general path does), never the old layout."""
    c = omnilake.connect(str(tmp_path / "wh"))
    cur = c.cursor()
    cur.execute("CREATE TABLE a (id BIGINT, name TEXT, score INTEGER)")
    cur.execute("INSERT INTO a VALUES (1, 'one', 10), (2, 'two', 20)")
    c.flush()
    star, named = "SELECT * FROM a WHERE id = %s", "SELECT name FROM a WHERE id = %s"

    def served(sql, key):
        for _ in range(2):
            cur.execute("SELECT * FROM a")  # the file's columns cached
        return _compare(c, monkeypatch, sql, (key,))
    assert served(star, 2) and served(named, 2) and served(named, 1)
    cur.execute("ALTER TABLE a RENAME COLUMN name TO label")
    assert served(star, 2)
    with pytest.raises(omnilake.ProgrammingError, match="name"):
        cur.execute(named, (2,))
    cur.execute("ALTER TABLE a RENAME COLUMN score TO name")
    assert served(named, 2)
    cur.execute(named, (2,))
    assert cur.fetchall() == [(20,)]  # the column now called `name`, an integer
    cur.execute("ALTER TABLE a ADD COLUMN note TEXT")
    cur.execute("INSERT INTO a VALUES (3, 'three', 30, 'new')")
    assert served(star, 3) and served(star, 1)
    cur.execute(star, (3,))
    assert cur.fetchall() == [(3, "three", 30, "new")]
    c.close()
