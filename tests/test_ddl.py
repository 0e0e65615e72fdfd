"""CREATE / DROP / ALTER of schemas and tables."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest

import omnilake
from omnilake import errors as E

from conftest import rows

ALL_TYPES = """CREATE TABLE all_types (
    b BOOLEAN, s SMALLINT, i INT, g BIGINT, r REAL, d DOUBLE PRECISION, n NUMERIC(10, 2),
    t TEXT, vc VARCHAR(5), by BYTEA, dd DATE, ts TIMESTAMP, tz TIMESTAMPTZ, u UUID, j JSON,
    v VECTOR(3))"""


def test_every_type_round_trips(cur):
    cur.execute(ALL_TYPES)
    cur.execute("""INSERT INTO all_types VALUES (true, 7, 42, 9000000000, 1.5, 2.25, 12.34, 'hello',
        'abc', '\\x0102'::bytea, '2024-02-29', '2024-01-02 03:04:05', '2024-01-02 03:04:05+02',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '[1, 2.5, -3]')""")
    cur.execute("SELECT * FROM all_types")
    (row,) = cur.fetchall()
    assert row[:9] == (True, 7, 42, 9000000000, 1.5, 2.25, Decimal("12.34"), "hello", "abc")
    assert row[9] == b"\x01\x02"
    assert row[10] == dt.date(2024, 2, 29)
    assert row[11] == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert row[12] == dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.timezone.utc)
    assert row[13] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert row[14] == {"a": [1, 2]}
    assert row[15] == [1.0, 2.5, -3.0]
    codes = [d[1] for d in cur.description]
    assert codes == [16, 21, 23, 20, 700, 701, 1700, 25, 1043, 17, 1082, 1114, 1184, 2950, 114, 16385]
    assert cur.description[13][1] == omnilake.STRING
    cur.execute("SELECT u, j FROM all_types")
    assert cur.fetch_arrow_table().column("u").to_pylist() == ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]


def test_information_schema_reports_sql_types(cur):
    cur.execute(ALL_TYPES)
    cur.execute("SELECT column_name, data_type, udt_name, omnilake_type FROM information_schema.columns "
                "WHERE table_name = 'all_types' ORDER BY ordinal_position")
    got = {name: (dtype, udt, full) for name, dtype, udt, full in cur.fetchall()}
    assert got["s"] == ("smallint", "smallint", "smallint")
    assert got["n"] == ("numeric", "numeric", "numeric(10, 2)")
    assert got["vc"] == ("character varying", "varchar", "varchar(5)")
    assert got["v"] == ("USER-DEFINED", "vector", "vector(3)")
    assert got["u"][1] == "uuid" and got["j"][1] == "json"
    assert got["tz"][0] == "timestamp with time zone"


def test_create_if_not_exists_and_duplicate(cur):
    cur.execute("CREATE TABLE t (a INT)")
    cur.execute("CREATE TABLE IF NOT EXISTS t (a INT, b INT)")
    with pytest.raises(E.DuplicateTable) as info:
        cur.execute("CREATE TABLE t (a INT)")
    assert info.value.sqlstate == "42P07"
    assert [c[0] for c in rows(cur, "SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 't'")] == ["a"]


def test_primary_key_becomes_identifier_field_and_not_null(conn, cur):
    cur.execute("CREATE TABLE k (id BIGINT, region TEXT, v INT, PRIMARY KEY (id, region))")
    table = conn.session.engine.warehouse.catalog.load_table("public.k")
    assert sorted(table.schema().identifier_field_names()) == ["id", "region"]
    with pytest.raises(E.NotNullViolation):
        cur.execute("INSERT INTO k VALUES (NULL, 'eu', 1)")


def test_unsupported_types_and_constraints_are_clear(cur):
    with pytest.raises(E.NotSupportedError, match="not supported"):
        cur.execute("CREATE TABLE bad (a INT[])")
    with pytest.raises(E.NotSupportedError, match="UNIQUE|constraint"):
        cur.execute("CREATE TABLE bad (a INT UNIQUE)")
    with pytest.raises(E.DataError, match="dimension"):
        cur.execute("CREATE TABLE bad (v VECTOR(0))")
    with pytest.raises(E.DuplicateColumn):
        cur.execute("CREATE TABLE bad (a INT, a TEXT)")
    assert rows(cur, "SHOW TABLES") == []


def test_schemas(cur):
    cur.execute("CREATE SCHEMA sales")
    cur.execute("CREATE SCHEMA IF NOT EXISTS sales")
    with pytest.raises(E.DuplicateSchema):
        cur.execute("CREATE SCHEMA sales")
    cur.execute("CREATE TABLE sales.orders (id INT)")
    cur.execute("INSERT INTO sales.orders VALUES (1)")
    assert rows(cur, "SELECT * FROM sales.orders") == [(1,)]
    with pytest.raises(E.UndefinedTable):
        cur.execute("SELECT * FROM orders")
    cur.execute("SET search_path TO sales")
    assert rows(cur, "SELECT * FROM orders") == [(1,)]
    assert rows(cur, "SHOW search_path") == [("sales",)]
    cur.execute("SET search_path TO public")
    with pytest.raises(E.DependentObjectsStillExist) as info:
        cur.execute("DROP SCHEMA sales")
    assert info.value.sqlstate == "2BP01"
    cur.execute("DROP SCHEMA sales CASCADE")
    cur.execute("DROP SCHEMA IF EXISTS sales")
    with pytest.raises(E.InvalidSchemaName):
        cur.execute("DROP SCHEMA sales")
    with pytest.raises(E.InvalidSchemaName):
        cur.execute("CREATE TABLE nowhere.t (a INT)")


def test_drop_table_removes_files(conn, cur, warehouse):
    import pathlib
    cur.execute("CREATE TABLE gone (a INT)")
    cur.execute("INSERT INTO gone VALUES (1)")
    conn.flush("gone")
    location = conn.session.engine.warehouse.catalog.load_table("public.gone").location()
    folder = pathlib.Path(location.removeprefix("file://"))
    assert pathlib.Path(warehouse).resolve() in folder.parents
    assert any(folder.rglob("*.parquet"))
    cur.execute("DROP TABLE gone")
    assert not folder.exists()
    with pytest.raises(E.UndefinedTable):
        cur.execute("DROP TABLE gone")
    cur.execute("DROP TABLE IF EXISTS gone")


def test_alter_add_drop_rename_keeps_old_data_readable(cur):
    cur.execute("CREATE TABLE ev (id INT, name TEXT, score REAL)")
    cur.execute("INSERT INTO ev VALUES (1, 'one', 1.5), (2, 'two', 2.5)")
    cur.execute("ALTER TABLE ev RENAME COLUMN name TO label")
    cur.execute("ALTER TABLE ev ADD COLUMN tags VECTOR(2)")
    cur.execute("ALTER TABLE ev DROP COLUMN score")
    cur.execute("INSERT INTO ev VALUES (3, 'three', '[1, 2]')")
    assert rows(cur, "SELECT id, label, tags FROM ev ORDER BY id") == [
        (1, "one", None), (2, "two", None), (3, "three", [1.0, 2.0])]
    # A new column under a dropped column's name does not resurrect old values.
    cur.execute("ALTER TABLE ev ADD COLUMN score DOUBLE PRECISION")
    assert rows(cur, "SELECT score FROM ev ORDER BY id") == [(None,), (None,), (None,)]
    assert rows(cur, "SELECT label FROM ev WHERE id = 2") == [("two",)]
    with pytest.raises(E.UndefinedColumn):
        cur.execute("SELECT name FROM ev")
    cur.execute("SELECT omnilake_type FROM information_schema.columns WHERE table_name='ev' "
                "AND column_name = 'tags'")
    assert cur.fetchone() == ("vector(2)",)


def test_dropping_a_new_table_under_a_renamed_name_keeps_the_renamed_data(cur):
    cur.execute("CREATE TABLE t (id INT)")
    cur.execute("INSERT INTO t VALUES (1), (2)")
    cur.execute("ALTER TABLE t RENAME TO t2")
    cur.execute("CREATE TABLE t (id INT)")
    cur.execute("DROP TABLE t")
    assert rows(cur, "SELECT id FROM t2 ORDER BY id") == [(1,), (2,)]


def test_alter_errors(cur):
    cur.execute("CREATE TABLE a1 (id INT, s TEXT)")
    with pytest.raises(E.DuplicateColumn):
        cur.execute("ALTER TABLE a1 ADD COLUMN id INT")
    with pytest.raises(E.UndefinedColumn):
        cur.execute("ALTER TABLE a1 DROP COLUMN nope")
    with pytest.raises(E.UndefinedColumn):
        cur.execute("ALTER TABLE a1 RENAME COLUMN nope TO x")
    with pytest.raises(E.NotSupportedError, match="NOT NULL"):
        cur.execute("ALTER TABLE a1 ADD COLUMN z INT NOT NULL")
    with pytest.raises(E.NotSupportedError, match="rewriting"):
        cur.execute("ALTER TABLE a1 ALTER COLUMN s TYPE INT")
    with pytest.raises(E.UndefinedTable):
        cur.execute("ALTER TABLE nope ADD COLUMN z INT")
    cur.execute("ALTER TABLE a1 ADD COLUMN IF NOT EXISTS id INT")
    cur.execute("ALTER TABLE a1 DROP COLUMN IF EXISTS nope")


def test_alter_type_promotion_and_rename_table(cur):
    cur.execute("CREATE TABLE p (n INT)")
    cur.execute("INSERT INTO p VALUES (2147483647)")
    cur.execute("ALTER TABLE p ALTER COLUMN n TYPE BIGINT")
    cur.execute("INSERT INTO p VALUES (9000000000)")
    assert rows(cur, "SELECT n FROM p ORDER BY n") == [(2147483647,), (9000000000,)]
    assert cur.description[0][1] == omnilake.NUMBER
    cur.execute("ALTER TABLE p RENAME TO q")
    assert rows(cur, "SELECT count(*) FROM q") == [(2,)]
    with pytest.raises(E.UndefinedTable):
        cur.execute("SELECT * FROM p")


def test_mysql_dialect(warehouse):
    with omnilake.connect(warehouse, dialect="mysql") as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE `m` (`id` INT, `label` VARCHAR(10), `at` DATETIME)")
        cur.execute("INSERT INTO `m` VALUES (1, 'x', '2024-01-01 00:00:00')")
        assert rows(cur, "SELECT `label`, `at` FROM `m` WHERE `id` = 1") == [
            ("x", dt.datetime(2024, 1, 1))]


def test_alter_errors_on_keys_and_schemas(cur):
    cur.execute("CREATE TABLE pk (id INT PRIMARY KEY, v INT)")
    with pytest.raises(E.NotSupportedError, match="primary key"):
        cur.execute("ALTER TABLE pk DROP COLUMN id")
    with pytest.raises(E.InvalidSchemaName):
        cur.execute("ALTER TABLE pk RENAME TO nosuch.pk2")
