"""PEP 249 surface and the Arrow-native extras."""

import datetime as dt
import subprocess
import sys
import uuid
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import omnilake
from omnilake import errors as E

from conftest import rows


def test_module_globals():
    assert omnilake.apilevel == "2.0"
    assert omnilake.threadsafety in (0, 1, 2, 3)
    assert omnilake.paramstyle == "pyformat"
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
                 "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
                 "NotSupportedError"):
        assert issubclass(getattr(omnilake, name), Exception)
    assert omnilake.Date(2024, 1, 2) == dt.date(2024, 1, 2)
    assert omnilake.Binary(b"x") == b"x"
    assert isinstance(omnilake.TimestampFromTicks(0), dt.datetime)


@pytest.fixture
def people(cur):
    cur.execute("CREATE TABLE people (id INT, name TEXT, born DATE, balance NUMERIC(10, 2))")
    cur.executemany("INSERT INTO people VALUES (%s, %s, %s, %s)", [
        (i, f"p{i}", dt.date(2000, 1, 1) + dt.timedelta(days=i), Decimal(i) / 4) for i in range(10)])
    return cur


def test_description_and_type_objects(people):
    people.execute("SELECT id, name, born, balance FROM people")
    names = [d[0] for d in people.description]
    assert names == ["id", "name", "born", "balance"]
    codes = [d[1] for d in people.description]
    assert codes[0] == omnilake.NUMBER and codes[1] == omnilake.STRING
    assert codes[2] == omnilake.DATETIME and codes[3] == omnilake.NUMBER
    assert codes[1] != omnilake.NUMBER
    assert people.description[3][4:6] == (10, 2)
    assert all(len(d) == 7 for d in people.description)


def test_fetch_variants_and_iteration(people):
    people.execute("SELECT id FROM people ORDER BY id")
    assert people.rowcount == 10
    assert people.fetchone() == (0,)
    assert people.fetchmany() == [(1,)]
    people.arraysize = 3
    assert people.fetchmany() == [(2,), (3,), (4,)]
    assert people.fetchmany(2) == [(5,), (6,)]
    assert list(people) == [(7,), (8,), (9,)]
    assert people.fetchone() is None
    assert people.fetchall() == []


def test_ddl_has_no_description(cur):
    cur.execute("CREATE TABLE d (a INT)")
    assert cur.description is None and cur.rowcount == -1
    with pytest.raises(E.ProgrammingError):
        cur.fetchall()


def test_paramstyles(people):
    assert rows(people, "SELECT name FROM people WHERE id = %s", (3,)) == [("p3",)]
    assert rows(people, "SELECT name FROM people WHERE id = %(id)s", {"id": 4}) == [("p4",)]
    assert rows(people, "SELECT name FROM people WHERE id = $2 AND name = $1", ("p5", 5)) == [("p5",)]
    assert rows(people, "SELECT count(*) FROM people WHERE born < %s", (dt.date(2000, 1, 4),)) == [(3,)]


def test_parameter_values_cannot_inject(people):
    evil = "x'; DROP TABLE people; --"
    assert rows(people, "SELECT count(*) FROM people WHERE name = %s", (evil,)) == [(0,)]
    assert rows(people, "SELECT count(*) FROM people") == [(10,)]


@pytest.mark.parametrize("value", [
    None, True, 7, -2**40, 1.25, float("inf"), Decimal("12.50"), "it's", b"\x00\xff",
    dt.date(2024, 2, 29), dt.datetime(2024, 1, 1, 12, 30, 15, 123456),
    dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
])
def test_parameter_round_trip(cur, value):
    cur.execute("SELECT %s AS v", (value,))
    (got,) = cur.fetchone()
    assert got == value


def test_list_uuid_and_numpy_parameters(cur):
    cur.execute("CREATE TABLE pv (u UUID, v VECTOR(3))")
    u = uuid.uuid4()
    cur.execute("INSERT INTO pv VALUES (%s, %s)", (u, np.array([1, 2, 3], dtype=np.float32)))
    cur.execute("INSERT INTO pv VALUES (%s, %s)", (None, [0.5, 0, -1]))
    assert rows(cur, "SELECT u, v FROM pv ORDER BY u NULLS LAST") == [
        (u, [1.0, 2.0, 3.0]), (None, [0.5, 0.0, -1.0])]


def test_arrow_extras(conn, people):
    people.execute("SELECT id, name FROM people WHERE id < 4 ORDER BY id")
    people.fetchone()
    table = people.fetch_arrow_table()
    assert table.column_names == ["id", "name"] and table.column("id").to_pylist() == [1, 2, 3]
    people.execute("SELECT id FROM people WHERE id < 2 ORDER BY id")
    assert people.fetch_df()["id"].tolist() == [0, 1]
    rel = conn.sql("SELECT count(*) AS n FROM people")
    assert rel.to_arrow().column("n").to_pylist() == [10]
    assert rel.to_pandas()["n"].tolist() == [10]
    assert rel.fetchall() == [(10,)]


def test_register_arrow_and_pandas(conn, people):
    conn.register("bonus", pa.table({"id": [1, 2], "amount": [10.0, 20.0]}))
    conn.register("labels", pd.DataFrame({"id": [2], "label": ["vip"]}))
    got = conn.sql("""SELECT p.name, b.amount, l.label FROM people p JOIN bonus b ON p.id = b.id
                      LEFT JOIN labels l ON l.id = p.id ORDER BY p.id""").fetchall()
    assert got == [("p1", 10.0, None), ("p2", 20.0, "vip")]
    conn.unregister("bonus")
    with pytest.raises(E.UndefinedTable):
        conn.sql("SELECT * FROM bonus")


def test_commit_rollback_and_close(conn, cur):
    cur.execute("CREATE TABLE c (a INT)")
    cur.execute("INSERT INTO c VALUES (1)")
    conn.commit()
    conn.rollback()  # every statement already committed: nothing to undo
    assert rows(cur, "SELECT a FROM c") == [(1,)]
    cur.close()
    with pytest.raises(E.InterfaceError):
        cur.execute("SELECT 1")
    conn.close()
    conn.close()  # closing twice is harmless
    with pytest.raises(E.InterfaceError):
        conn.cursor().execute("SELECT 1")
    with pytest.raises(E.InterfaceError):
        conn.commit()


def test_multiple_statements_return_the_last_result(cur):
    cur.execute("CREATE TABLE ms (a INT); INSERT INTO ms VALUES (1), (2); SELECT sum(a) FROM ms")
    assert cur.fetchall() == [(3,)]


def test_postgres_output_names(cur):
    cur.execute("SELECT 1, count(*), 1 AS x, 2 AS x, CAST('1' AS INT), upper('a')")
    assert [d[0] for d in cur.description] == ["?column?", "count", "x", "x", "int", "upper"]


def test_stream_reads_a_result_batch_by_batch(conn):
    conn.execute("CREATE TABLE big (n BIGINT)")
    conn.insert("big", {"n": list(range(50_000))})
    conn.flush()
    reader = conn.stream("SELECT n * 2 AS m FROM big WHERE n >= %s ORDER BY n", (10,))
    assert reader.schema.names == ["m"]
    total, batches = 0, 0
    for batch in reader:
        total += pc_sum(batch.column(0))
        batches += 1
    assert total == sum(2 * n for n in range(10, 50_000)) and batches >= 2
    # a non-query statement still answers through a reader
    assert conn.stream("INSERT INTO big VALUES (1)").read_all().num_rows == 0
    with pytest.raises(omnilake.ProgrammingError, match="exactly one"):
        conn.stream("SELECT 1; SELECT 2")


def pc_sum(array) -> int:
    import pyarrow.compute as pc
    return pc.sum(array).as_py()


def test_long_number_lists_as_parameters(cur):
    """Lists of numbers (vectors) bind as one node and reach DataFusion as parameter values;
    the results are those of the same literals written out."""
    cur.execute("CREATE TABLE lp (id INT, v VECTOR(20))")
    cur.execute("INSERT INTO lp VALUES (%s, %s), (%s, %s)", (1, list(range(20)), 2, np.full(20, 0.5)))
    assert rows(cur, "SELECT id FROM lp WHERE id = ANY(%s) ORDER BY id", (list(range(30)),)) == [(1,), (2,)]
    assert rows(cur, "SELECT cardinality(%s), %s[3]", ([1, 2.5] * 10, list(range(40)))) == [(20, 2)]
    literal = "ARRAY[" + ", ".join(["0.0"] * 20) + "]"
    by_parameter = rows(cur, "SELECT id, v <-> %s FROM lp ORDER BY id", (np.zeros(20),))
    assert by_parameter == rows(cur, f"SELECT id, v <-> {literal} FROM lp ORDER BY id")
    assert by_parameter[1][1] == pytest.approx(np.sqrt(20 * 0.25))
    assert rows(cur, "SELECT id FROM lp ORDER BY v <-> %s LIMIT 1", (np.full(20, 0.4),)) == [(2,)]
    (nan_list,), = rows(cur, "SELECT %s", ([1.0, float("nan")] * 10,))  # not a plain-number list
    assert nan_list[0] == 1.0 and np.isnan(nan_list[1])
    with pytest.raises(E.DataError, match="different vector dimensions"):
        cur.execute("SELECT id FROM lp ORDER BY v <-> %s LIMIT 1", (np.zeros(19),))


def test_kernels_import_without_the_sql_engine():
    # `import omnilake.gpu` (kernels, encoder) loads neither DataFusion nor pyiceberg.
    code = ("import sys, omnilake.gpu, omnilake.gpu.encoder, omnilake.gpu.models; "
            "heavy = [m for m in ('datafusion', 'pyiceberg', 'sqlglot') if m in sys.modules]; "
            "assert not heavy, heavy; import omnilake; assert omnilake.connect and omnilake.VECTOR")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("unit,tz", [("us", "UTC"), ("us", None), ("ms", "UTC"), ("s", None),
                                     ("us", "+00:00"), ("us", "Etc/UTC"), ("us", "Europe/Paris"),
                                     ("ns", "UTC")])
def test_timestamps_reach_python_as_arrow_gives_them(unit, tz):
    from omnilake.dbapi import _python_values
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    rng = np.random.default_rng(3)
    values = [int(v) for v in rng.integers(-3 * 10**9, 4 * 10**9, 200) * per_second
              + rng.integers(0, per_second, 200)] + [None, 0, -1]
    if unit != "ns" and tz != "Europe/Paris":  # the ends of Python's datetime range
        values += [-62135596800 * per_second, 253402300799 * per_second + per_second - 1]
    column = pa.array(values, pa.timestamp(unit, tz))
    got, expected = _python_values(column), column.to_pylist()
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]
    assert {v.tzinfo for v in got if v is not None} == {v.tzinfo for v in expected if v is not None}
    assert _python_values(column.slice(0, 0)) == []
