"""Bad input: the right exception class, its SQLSTATE, a message a person can act on, and
nothing written."""

import pytest

import omnilake
from omnilake import errors as E

from conftest import rows


@pytest.fixture
def t(conn, cur):
    cur.execute("CREATE TABLE t (id INT NOT NULL, name VARCHAR(3), v VECTOR(3), n NUMERIC(4, 1))")
    cur.execute("INSERT INTO t VALUES (1, 'a', '[1,2,3]', 1.5)")
    conn.flush()
    return cur


def snapshot_count(conn):
    return len(conn.session.engine.warehouse.catalog.load_table("public.t").snapshots())


BAD_WRITES = [
    ("INSERT INTO t VALUES (NULL, 'b', NULL, NULL)", E.NotNullViolation, "23502", "not-null"),
    ("INSERT INTO t (name) VALUES ('b')", E.NotNullViolation, "23502", '"id"'),
    ("INSERT INTO t VALUES (2, 'b', '[1,2]', NULL)", E.DataError, "22000", "expected 3 dimensions, not 2"),
    ("INSERT INTO t VALUES (2, 'b', '[1,2,x]', NULL)", E.InvalidTextRepresentation, "22P02", "vector"),
    ("INSERT INTO t VALUES ('two', 'b', NULL, NULL)", E.InvalidTextRepresentation, "22P02", "integer|int32"),
    ("INSERT INTO t VALUES (2, 'long', NULL, NULL)", E.StringDataRightTruncation, "22001", "varying\\(3\\)"),
    ("INSERT INTO t VALUES (2, 'b', NULL, 12345)", E.NumericValueOutOfRange, "22003", "numeric"),
    ("INSERT INTO t VALUES (3000000000, 'b', NULL, NULL)", E.NumericValueOutOfRange, "22003", "range"),
    ("INSERT INTO t VALUES (1, 'a', NULL, NULL, 'extra')", E.SyntaxError, "42601", "more expressions"),
    ("INSERT INTO t (nope) VALUES (1)", E.UndefinedColumn, "42703", "nope"),
    ("INSERT INTO nope VALUES (1)", E.UndefinedTable, "42P01", '"nope" does not exist'),
    ("INSERT INTO t VALUES (1/0, 'a', NULL, NULL)", E.DivisionByZero, "22012", "zero"),
    ("UPDATE t SET v = '[1]' WHERE id = 1", E.DataError, "22000", "dimensions"),
    ("UPDATE t SET id = NULL", E.NotNullViolation, "23502", "not-null"),
    ("DELETE FROM t WHERE nope = 1", E.UndefinedColumn, "42703", "nope"),
]


@pytest.mark.parametrize("sql, cls, sqlstate, message", BAD_WRITES)
def test_bad_write_raises_and_writes_nothing(conn, t, sql, cls, sqlstate, message):
    before = snapshot_count(conn)
    with pytest.raises(cls, match=message) as info:
        t.execute(sql)
    assert info.value.sqlstate == sqlstate
    assert isinstance(info.value, omnilake.DatabaseError)
    conn.flush()
    assert snapshot_count(conn) == before
    assert rows(t, "SELECT id, name, v, n FROM t") == [(1, "a", [1.0, 2.0, 3.0], pytest.approx(1.5))]


BAD_QUERIES = [
    ("SELEC 1", E.SyntaxError, "42601"),
    ("SELECT * FROM", E.SyntaxError, "42601"),
    ("SELECT (1", E.SyntaxError, "42601"),
    ("SELECT * FROM missing", E.UndefinedTable, "42P01"),
    ("SELECT nope FROM t", E.UndefinedColumn, "42703"),
    ("SELECT no_such_function(id) FROM t", E.UndefinedFunction, "42883"),
    ("SELECT id + 'abc' FROM t", E.ProgrammingError, None),
    ("SELECT CAST('abc' AS INT)", E.InvalidTextRepresentation, "22P02"),
    ("SELECT * FROM information_schema.nope", E.UndefinedTable, "42P01"),
    ("SELECT * FROM t FOR VERSION AS OF 12345", E.InvalidParameterValue, "22023"),
    ("SHOW nonsense", E.UndefinedObject, "42704"),
    ("CREATE VIEW v AS SELECT 1", E.NotSupportedError, "0A000"),
    ("CREATE INDEX i ON t (id)", E.NotSupportedError, "0A000"),
]


@pytest.mark.parametrize("sql, cls, sqlstate", BAD_QUERIES)
def test_bad_query(t, sql, cls, sqlstate):
    with pytest.raises(cls) as info:
        t.execute(sql)
    if sqlstate:
        assert info.value.sqlstate == sqlstate
    assert str(info.value)
    assert "Traceback" not in str(info.value)


def test_syntax_error_has_position(cur):
    sql = "SELECT 1 FROM t WHERE"
    with pytest.raises(E.SyntaxError) as info:
        cur.execute(sql)
    assert info.value.position is not None and 1 <= info.value.position <= len(sql) + 1


def test_parameter_errors(t):
    with pytest.raises(E.ProgrammingError, match="placeholder"):
        t.execute("SELECT %s, %s", (1,))
    with pytest.raises(E.ProgrammingError, match="placeholder"):
        t.execute("SELECT %s", (1, 2))
    with pytest.raises(E.ProgrammingError, match="no value for parameter"):
        t.execute("SELECT %(a)s", {"b": 1})
    with pytest.raises(E.ProgrammingError):
        t.execute("SELECT 1", (1,))
    with pytest.raises(E.ProgrammingError):
        t.execute(123)
    with pytest.raises(E.NotSupportedError, match="parameter"):
        t.execute("SELECT %s", (object(),))


def test_errors_are_pep249_and_pg_named():
    assert issubclass(E.SyntaxError, omnilake.ProgrammingError)
    assert issubclass(E.NotNullViolation, omnilake.IntegrityError)
    assert issubclass(E.InvalidTextRepresentation, omnilake.DataError)
    assert issubclass(omnilake.DatabaseError, omnilake.Error)
    err = E.UndefinedTable("x", hint="create it")
    assert err.pgcode == "42P01" and "HINT: create it" in str(err)
