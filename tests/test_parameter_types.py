"""The type of each `$n` (engine/describe.parameter_types), as the wire server's
ParameterDescription tells binary clients (asyncpg, JDBC): from the column it is compared with
or inserted into, a cast, LIMIT; None (text) where nothing pins it down or the table is not a
stored one. A stored table is read from the engine's cache, not asked of the catalog again."""

import pytest

import omnilake
from omnilake.engine.describe import parameter_types


@pytest.fixture
def session(tmp_path):
    conn = omnilake.connect(str(tmp_path / "wh"))
    conn.cursor().execute("CREATE TABLE t (id BIGINT, name TEXT, price DOUBLE PRECISION)")
    conn.cursor().execute("CREATE SCHEMA other")
    conn.cursor().execute("CREATE TABLE other.u (id INTEGER, at TIMESTAMPTZ)")
    yield conn.session
    conn.close()


@pytest.mark.parametrize("sql, expected", [
    ("SELECT name FROM t WHERE id = $1", ["bigint"]),
    ("SELECT x.name FROM t x WHERE x.price > $2 AND x.name = $1", ["text", "double precision"]),
    ("SELECT * FROM other.u WHERE at < $1 AND id IN ($2)", ["timestamptz", "integer"]),
    ("INSERT INTO t VALUES ($1, $2, $3)", ["bigint", "text", "double precision"]),
    ("SELECT $1::date, id FROM t LIMIT $2", ["date", "bigint"]),
    ("SELECT * FROM nowhere WHERE id = $1", [None]),  # no such table: text, no error
    ("SELECT * FROM missing.t WHERE id = $1", [None]),  # no such schema
    ("SELECT relname FROM pg_class WHERE oid = $1", [None]),  # not a stored table
    ("SELECT $1", [None]),
])
def test_parameter_types(session, sql, expected):
    found = parameter_types(session, session.parse(sql)[0])
    assert [None if t is None else t.name for t in found] == expected


def test_a_loaded_table_is_not_asked_of_the_catalog_again(session, monkeypatch):
    tree = session.parse("SELECT name FROM t WHERE id = $1")[0]
    parameter_types(session, tree)  # loads the table

    def refused(*args, **kwargs):
        raise AssertionError("the catalog was asked")
    catalog = session.engine.warehouse.catalog
    monkeypatch.setattr(catalog, "table_exists", refused)
    monkeypatch.setattr(catalog, "load_table", refused)
    assert [t.name for t in parameter_types(session, tree)] == ["bigint"]
