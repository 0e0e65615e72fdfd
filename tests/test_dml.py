"""INSERT, UPDATE, DELETE, TRUNCATE, CREATE TABLE AS, executemany and conn.insert."""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from omnilake import errors as E

from conftest import rows


@pytest.fixture
def items(cur):
    cur.execute("CREATE TABLE items (id INT NOT NULL, name TEXT, qty INT, price NUMERIC(8, 2))")
    cur.execute("INSERT INTO items VALUES (1, 'apple', 10, 0.5), (2, 'pear', NULL, 0.75), "
                "(3, 'plum', 3, 1.25), (4, NULL, 0, 2)")
    return cur


def test_insert_values_reports_rowcount_and_status(items):
    items.execute("INSERT INTO items (id, name) VALUES (5, 'fig'), (6, 'kiwi')")
    assert items.rowcount == 2 and items.statusmessage == "INSERT 0 2"
    assert rows(items, "SELECT id, name, qty FROM items WHERE id >= 5 ORDER BY id") == [
        (5, "fig", None), (6, "kiwi", None)]


def test_insert_select_and_partial_column_list(items):
    items.execute("CREATE TABLE cheap (id INT, name TEXT)")
    items.execute("INSERT INTO cheap SELECT id, name FROM items WHERE price < 1")
    assert items.rowcount == 2
    items.execute("INSERT INTO cheap (name) SELECT 'x'")
    assert rows(items, "SELECT id, name FROM cheap ORDER BY name") == [
        (1, "apple"), (2, "pear"), (None, "x")]


def test_insert_casts_and_rounds_like_postgres(cur):
    cur.execute("CREATE TABLE c (i INT, s SMALLINT, n NUMERIC(6, 2), t TEXT)")
    cur.execute("INSERT INTO c VALUES ('12', 2.6, 1.5, 42)")
    assert rows(cur, "SELECT * FROM c") == [(12, 3, Decimal("1.50"), "42")]


def test_update_with_convertible_where(items):
    items.execute("UPDATE items SET qty = qty + 1, name = upper(name) WHERE id IN (1, 3)")
    assert items.rowcount == 2 and items.statusmessage == "UPDATE 2"
    assert rows(items, "SELECT id, name, qty FROM items ORDER BY id") == [
        (1, "APPLE", 11), (2, "pear", None), (3, "PLUM", 4), (4, None, 0)]


def test_update_with_general_where(items):
    items.execute("UPDATE items SET price = price * 2 WHERE name LIKE 'p%' OR qty * 2 > 15")
    assert items.rowcount == 3
    assert rows(items, "SELECT id, price FROM items ORDER BY id") == [
        (1, Decimal("1.00")), (2, Decimal("1.50")), (3, Decimal("2.50")), (4, Decimal("2.00"))]


def test_update_without_where_and_with_no_match(items):
    items.execute("UPDATE items SET qty = 0 WHERE id = 99")
    assert items.rowcount == 0
    items.execute("UPDATE items SET qty = 7")
    assert items.rowcount == 4
    assert rows(items, "SELECT DISTINCT qty FROM items") == [(7,)]


def test_update_checks_constraints_and_writes_nothing(items):
    with pytest.raises(E.NotNullViolation):
        items.execute("UPDATE items SET id = NULL WHERE id = 1")
    with pytest.raises(E.UndefinedColumn):
        items.execute("UPDATE items SET nope = 1")
    assert rows(items, "SELECT count(*) FROM items WHERE id IS NOT NULL") == [(4,)]


def test_delete_keeps_rows_whose_condition_is_null(items):
    # qty is NULL for id 2: `qty < 5` is NULL there, so SQL keeps the row.
    items.execute("DELETE FROM items WHERE qty < 5")
    assert items.rowcount == 2 and items.statusmessage == "DELETE 2"
    assert rows(items, "SELECT id FROM items ORDER BY id") == [(1,), (2,)]


def test_delete_with_general_where_and_null_semantics(items):
    items.execute("DELETE FROM items WHERE length(name) = 4 OR qty * 0 <> 0")
    assert items.rowcount == 2  # pear, plum
    assert rows(items, "SELECT id FROM items ORDER BY id") == [(1,), (4,)]
    items.execute("DELETE FROM items")
    assert items.rowcount == 2
    assert rows(items, "SELECT count(*) FROM items") == [(0,)]


def test_truncate(items):
    items.execute("TRUNCATE items")
    assert rows(items, "SELECT count(*) FROM items") == [(0,)]
    items.execute("INSERT INTO items VALUES (9, 'new', 1, 1)")
    assert rows(items, "SELECT id FROM items") == [(9,)]


def test_create_table_as(items):
    items.execute("CREATE TABLE summary AS SELECT name, qty * 2 AS double_qty, price FROM items "
                  "WHERE id <= 2")
    assert items.rowcount == 2
    items.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'summary' "
                  "ORDER BY ordinal_position")
    assert items.fetchall() == [("text",), ("bigint",), ("numeric",)]
    assert rows(items, "SELECT * FROM summary ORDER BY name") == [
        ("apple", 20, Decimal("0.50")), ("pear", None, Decimal("0.75"))]
    with pytest.raises(E.DuplicateTable):
        items.execute("CREATE TABLE summary AS SELECT 1 AS a")
    items.execute("CREATE TABLE IF NOT EXISTS summary AS SELECT 1 AS a")
    with pytest.raises(E.DuplicateColumn):
        items.execute("CREATE TABLE dup AS SELECT 1 AS a, 2 AS a")


def test_executemany_is_one_batch(conn, cur):
    cur.execute("CREATE TABLE m (id INT, label TEXT, v VECTOR(2))")
    cur.executemany("INSERT INTO m VALUES (%s, %s, %s)",
                    [(i, f"row{i}", [i, i + 0.5]) for i in range(1000)])
    assert cur.rowcount == 1000
    conn.flush("m")
    table = conn.session.engine.warehouse.catalog.load_table("public.m")
    assert len(table.snapshots()) == 1  # one commit for the whole batch
    assert rows(cur, "SELECT count(*), sum(id) FROM m") == [(1000, 499500)]
    assert rows(cur, "SELECT v FROM m WHERE id = 3") == [([3.0, 3.5],)]


def test_executemany_named_and_all_or_nothing(cur):
    cur.execute("CREATE TABLE m2 (id INT NOT NULL, label TEXT)")
    cur.executemany("INSERT INTO m2 (label, id) VALUES (%(l)s, %(i)s)",
                    [{"i": 1, "l": "a"}, {"i": 2, "l": "b"}])
    with pytest.raises(E.NotNullViolation):
        cur.executemany("INSERT INTO m2 VALUES (%s, %s)", [(3, "c"), (None, "d")])
    assert rows(cur, "SELECT id, label FROM m2 ORDER BY id") == [(1, "a"), (2, "b")]


def test_executemany_other_statements_loop(items):
    items.executemany("UPDATE items SET qty = %s WHERE id = %s", [(100, 1), (200, 2)])
    assert items.rowcount == 2
    assert rows(items, "SELECT qty FROM items WHERE id <= 2 ORDER BY id") == [(100,), (200,)]


def test_conn_insert_arrow_and_pandas(conn, cur):
    import pandas as pd
    cur.execute("CREATE TABLE a (id BIGINT, name TEXT, score DOUBLE PRECISION)")
    n = conn.insert("a", pa.table({"name": ["x", "y"], "id": [1, 2]}))
    assert n == 2
    conn.insert("a", pd.DataFrame({"id": [3], "score": [0.5]}))
    assert rows(cur, "SELECT id, name, score FROM a ORDER BY id") == [
        (1, "x", None), (2, "y", None), (3, None, 0.5)]
    with pytest.raises(E.UndefinedColumn):
        conn.insert("a", pa.table({"nope": [1]}))
    with pytest.raises(E.UndefinedTable):
        conn.insert("missing", pa.table({"x": [1]}))
    conn.insert("created", pa.table({"x": pa.array([1, 2], pa.int32()), "s": ["a", None]}), create=True)
    assert rows(cur, "SELECT x, s FROM created ORDER BY x") == [(1, "a"), (2, None)]


def test_conn_insert_accepts_field_ids_and_string_views(conn, cur):
    """Arrow from Parquet written by other tools carries field ids and view types."""
    cur.execute("CREATE TABLE fv (id BIGINT, name TEXT)")
    schema = pa.schema([pa.field("id", pa.int64(), metadata={b"PARQUET:field_id": b"7"}),
                        pa.field("name", pa.string_view(), metadata={b"PARQUET:field_id": b"8"})])
    conn.insert("fv", pa.table({"id": [1], "name": pa.array(["v"], pa.string_view())}, schema=schema))
    assert rows(cur, "SELECT * FROM fv") == [(1, "v")]


def test_delete_with_or_over_nulls_follows_sql(cur):
    """`i <> 0 OR s = 'x'` is TRUE where i is NULL and s is 'x', NULL where both miss."""
    cur.execute("CREATE TABLE n3 (i INT, s TEXT)")
    cur.execute("INSERT INTO n3 VALUES (1, 'a'), (NULL, 'x'), (NULL, 'b'), (0, 'x'), (0, NULL)")
    cur.execute("DELETE FROM n3 WHERE i <> 0 OR s = 'x'")
    assert cur.rowcount == 3
    assert rows(cur, "SELECT i, s FROM n3 ORDER BY s NULLS LAST") == [(None, "b"), (0, None)]


def test_delete_and_update_with_date_and_timestamp_literals(cur):
    import datetime as dt
    cur.execute("CREATE TABLE tl (id INT, ts TIMESTAMP, d DATE, z TIMESTAMPTZ)")
    cur.execute("INSERT INTO tl VALUES (1, '2024-01-01 10:00:00', '2024-01-01', '2024-01-01 10:00:00+00'), "
                "(2, '2024-01-02 10:00:00', '2024-01-02', '2024-01-02 10:00:00+00'), "
                "(3, '2024-01-03 10:00:00', '2024-01-03', '2024-01-03 10:00:00+00')")
    cur.execute("DELETE FROM tl WHERE ts = '2024-01-01 10:00:00'")
    assert cur.rowcount == 1
    cur.execute("UPDATE tl SET id = 20 WHERE ts = %s", (dt.datetime(2024, 1, 2, 10),))
    assert cur.rowcount == 1
    cur.execute("DELETE FROM tl WHERE d = '2024-1-3'")  # not strict ISO: the general path
    assert cur.rowcount == 1
    assert rows(cur, "SELECT id FROM tl") == [(20,)]
    cur.execute("DELETE FROM tl WHERE z = '2024-01-02T10:00:00+00'")
    assert rows(cur, "SELECT count(*) FROM tl") == [(0,)]


def test_rounding_is_half_away_from_zero(cur):
    cur.execute("CREATE TABLE rd (i INT, n NUMERIC(5, 2))")
    cur.execute("INSERT INTO rd VALUES (2.5, 0.125), (-2.5, -0.125)")
    assert rows(cur, "SELECT i, n FROM rd ORDER BY i") == [(-3, Decimal("-0.13")), (3, Decimal("0.13"))]


def test_failed_create_table_as_leaves_no_table(conn, cur):
    conn.register("src", pa.table({"a": pa.array([2**64 - 1], pa.uint64())}))
    with pytest.raises(E.NumericValueOutOfRange):
        cur.execute("CREATE TABLE c AS SELECT * FROM src")
    with pytest.raises(E.UndefinedTable):
        cur.execute("SELECT * FROM c")
    with pytest.raises(E.NumericValueOutOfRange):
        conn.insert("c2", pa.table({"a": pa.array([2**64 - 1], pa.uint64())}), create=True)
    assert rows(cur, "SHOW TABLES") == []


def test_executemany_json_documents(cur):
    cur.execute("CREATE TABLE jd (id INT, doc JSON)")
    cur.executemany("INSERT INTO jd VALUES (%s, %s)", [(1, {"a": 1}), (2, {"b": "x"}), (3, None)])
    assert rows(cur, "SELECT id, doc FROM jd ORDER BY id") == [(1, {"a": 1}), (2, {"b": "x"}), (3, None)]


def test_not_equal_keeps_null_rows_in_a_single_file(conn, cur):
    """pyiceberg's strict bounds check would drop a whole file for `i <> 50` when every
    non-NULL i differs from 50, NULL rows included."""
    cur.execute("CREATE TABLE ne (i INT, s TEXT)")
    cur.execute("INSERT INTO ne VALUES (1, 'a'), (NULL, 'b'), (2, 'c')")
    conn.flush()
    cur.execute("UPDATE ne SET s = 'x' WHERE i <> 50")
    assert cur.rowcount == 2
    cur.execute("DELETE FROM ne WHERE i <> 50")
    assert cur.rowcount == 2
    assert rows(cur, "SELECT i, s FROM ne") == [(None, "b")]


def test_memtable_rows_of_an_older_layout_read_with_the_new_column_as_null():
    """Rows acknowledged just as ALTER TABLE ADD COLUMN committed keep the old layout in the
    memtable; a scan must read them (the new column NULL), not fail."""
    import pyarrow as pa
    from omnilake.catalog.types import SqlType
    from omnilake.engine.scan import Column, pending_in_scan_types
    columns = [Column(1, "a", SqlType("integer"), False), Column(2, "b", SqlType("text"), False)]
    old = pa.table({"a": pa.array([1], pa.int32())})
    new = pa.table({"a": pa.array([2], pa.int32()), "b": pa.array(["x"], pa.large_string())})
    rows = pending_in_scan_types([old, new], columns)
    assert rows.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_decimal_literals_into_float_columns_are_correctly_rounded(cur):
    cur.execute("CREATE TABLE f (d DOUBLE PRECISION, r REAL)")
    cur.execute("INSERT INTO f VALUES (10.2, 10.2), (0.1, 0.3)")
    cur.execute("SELECT d, r FROM f ORDER BY d")
    got = cur.fetchall()
    assert got[0][0] == 0.1 and got[1][0] == 10.2
    assert abs(got[1][1] - 10.2) < 1e-6 and abs(got[0][1] - 0.3) < 1e-6


def test_update_from_and_delete_using_are_refused_clearly(cur):
    cur.execute("CREATE TABLE a (id INT, x INT)")
    cur.execute("CREATE TABLE b (id INT, y INT)")
    cur.execute("INSERT INTO a VALUES (1, 0), (2, 0)")
    cur.execute("INSERT INTO b VALUES (1, 10)")
    with pytest.raises(E.NotSupportedError, match="UPDATE ... FROM"):
        cur.execute("UPDATE a SET x = b.y FROM b WHERE a.id = b.id")
    with pytest.raises(E.NotSupportedError, match="DELETE ... USING"):
        cur.execute("DELETE FROM a USING b WHERE a.id = b.id")
    assert rows(cur, "SELECT * FROM a ORDER BY id") == [(1, 0), (2, 0)]


def test_time_columns_take_text_as_postgresql_does(cur):
    cur.execute("CREATE TABLE clock (id INT, t TIME)")
    cur.execute("INSERT INTO clock VALUES (1, '10:00'), (2, '23:59:59.5'), (3, NULL)")
    cur.execute("INSERT INTO clock VALUES (%s, %s)", (4, " 07:08:09 "))
    cur.execute("SELECT id, t FROM clock ORDER BY id")
    assert cur.fetchall() == [(1, dt.time(10, 0)), (2, dt.time(23, 59, 59, 500000)), (3, None),
                              (4, dt.time(7, 8, 9))]
    with pytest.raises(E.DataError, match="type time: \"25:00\"") as err:
        cur.execute("INSERT INTO clock VALUES (5, '25:00')")
    assert err.value.sqlstate == "22007"
    cur.execute("SELECT count(*) FROM clock")
    assert cur.fetchall() == [(4,)]  # the failed INSERT wrote nothing


def test_a_placeholder_insert_stores_what_a_bound_insert_stores(cur, monkeypatch):
    """A single INSERT ... VALUES of placeholders is written as executemany writes its batch
    (Session.insert_row: no binding or literal parsing); every type lands as the general
    path (parameters bound into the tree as literals) stores it, and bad values fail alike."""
    import uuid
    from omnilake.engine import engine as engine_module
    cur.execute("CREATE TABLE every (i BIGINT, s SMALLINT, f DOUBLE PRECISION, n NUMERIC(10,2), "
                "t TEXT, b BYTEA, flag BOOLEAN, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, u UUID, "
                "js JSON, v VECTOR(3))")
    values = [
        (1, 2, 1.5, Decimal("12.50"), "it's", b"\x00\xff", True, dt.date(2024, 2, 29),
         dt.datetime(2024, 1, 1, 12, 30, 15, 123456),
         dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc), uuid.UUID(int=5), {"a": [1]},
         [1.0, 2.0, 3.0]),
        (2, None, float("inf"), None, None, None, None, None, None, None, None, None, None),
        (3, -7, 0, 3, "7", b"", False, "2024-03-01", "2024-03-01 10:00:00",
         "2024-03-01 10:00:00+02", str(uuid.UUID(int=6)), '{"b": 2}', "[0.5, 0, -1]"),
    ]
    insert = "INSERT INTO every VALUES (" + ", ".join(["%s"] * 13) + ")"
    for row in values:
        cur.execute(insert, row)
    fast = rows(cur, "SELECT * FROM every ORDER BY i")
    cur.execute("DELETE FROM every")
    monkeypatch.setattr(engine_module.Session, "insert_row", lambda self, tree, params: None)
    for row in values:
        cur.execute(insert, row)
    assert rows(cur, "SELECT * FROM every ORDER BY i") == fast
    monkeypatch.undo()
    for bad in [(1, 100000) + values[0][2:], ("x",) + values[0][1:], values[0][:12] + ([1, 2],)]:
        with pytest.raises(E.Error) as fast_error:
            cur.execute(insert, bad)
        monkeypatch.setattr(engine_module.Session, "insert_row", lambda self, tree, params: None)
        with pytest.raises(E.Error) as general_error:
            cur.execute(insert, bad)
        monkeypatch.undo()
        assert fast_error.value.sqlstate == general_error.value.sqlstate, bad
    with pytest.raises(E.ProgrammingError):
        cur.execute(insert, values[0][:12])  # a parameter short
    assert len(rows(cur, "SELECT i FROM every")) == 3
