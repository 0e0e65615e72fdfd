"""Real clients over real sockets against `omnilake serve`: psycopg 3, asyncpg, psql,
SQLAlchemy 2, pandas, pgvector-python, and pgJDBC when a JDK and the driver are installed."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg")
asyncpg = pytest.importorskip("asyncpg")

from wire_server import start_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(str(tmp_path_factory.mktemp("wire") / "wh"))
    with psycopg.connect(srv.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(10,2), "
                  "seen TIMESTAMPTZ, tags TEXT, emb VECTOR(3))")
        c.execute("INSERT INTO items VALUES (1, 'apple', 1.25, '2024-01-02 03:04:05+00', 'fruit', '[1,0,0]'), "
                  "(2, 'pear', 2.50, NULL, NULL, '[0,1,0]'), (3, 'plum', NULL, NULL, 'fruit', '[0,0,1]')")
    yield srv
    assert srv.stop() == 0


def test_psycopg_text_binary_and_parameters(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        assert c.info.server_version >= 160000
        assert c.execute("SELECT name FROM items WHERE id = %s", (2,)).fetchone() == ("pear",)
        row = c.execute("SELECT id, price, seen FROM items WHERE id = 1").fetchone()
        assert row == (1, decimal.Decimal("1.25"), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
        cur = c.cursor(binary=True)
        got = cur.execute("SELECT id, name, price, seen, 1.5::float8, true, DATE '2024-02-03', "
                          "'6c7f4f7a-9a63-4a4e-9d0f-4c0f0d5f8e11'::uuid FROM items WHERE id = %s",
                          (1,)).fetchone()
        assert got == (1, "apple", decimal.Decimal("1.25"),
                       dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), 1.5, True,
                       dt.date(2024, 2, 3), uuid.UUID("6c7f4f7a-9a63-4a4e-9d0f-4c0f0d5f8e11"))
        tricky = cur.execute("SELECT 0.0001::numeric(10,4), 12345678.9::numeric(12,1), -0.5::numeric(3,1), "
                             "10000::numeric(10,0), 0::numeric(5,2)").fetchone()
        assert tricky == (decimal.Decimal("0.0001"), decimal.Decimal("12345678.9"), decimal.Decimal("-0.5"),
                          decimal.Decimal("10000"), decimal.Decimal("0.00"))
        # prepared statements (psycopg prepares after repeated use, or when asked)
        for i in (1, 2, 3):
            assert c.execute("SELECT id FROM items WHERE id = %s", (i,), prepare=True).fetchone() == (i,)
        assert [d.name for d in c.execute("SELECT id AS \"Key\", name FROM items LIMIT 1").description] \
            == ["Key", "name"]
        plan = c.execute("EXPLAIN SELECT name FROM items WHERE id > %s", (2,), prepare=True).fetchall()
        assert any("IcebergScan" in line for _, line in plan)


def test_psycopg_errors_carry_sqlstate_and_keep_the_connection(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM no_such_table")
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute("SELEC 1")
        with pytest.raises(psycopg.errors.DataError):
            c.execute("INSERT INTO items (id, name, emb) VALUES (9, 'x', '[1,2]')")
        assert c.execute("SELECT count(*) FROM items").fetchone() == (3,)


def test_psycopg_transactions(server):
    with psycopg.connect(server.conninfo()) as c:  # autocommit off: BEGIN is implicit
        c.execute("INSERT INTO items (id, name) VALUES (10, 'tx')")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.rollback()
        assert c.execute("SELECT count(*) FROM items WHERE id = 10").fetchone() == (0,)
        c.execute("INSERT INTO items (id, name) VALUES (11, 'kept')")
        c.execute("SAVEPOINT s1")
        c.execute("INSERT INTO items (id, name) VALUES (12, 'dropped')")
        c.execute("ROLLBACK TO SAVEPOINT s1")
        c.commit()
        assert c.execute("SELECT id FROM items WHERE id IN (11, 12)").fetchall() == [(11,)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("SELECT * FROM nope")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("DELETE FROM items WHERE id = 11")


def test_psycopg_copy_text_csv_binary(server):
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("CREATE TABLE copied (id INT, label TEXT, score DOUBLE PRECISION)")
        with c.cursor().copy("COPY copied FROM STDIN") as copy:
            copy.write("1\tone\t0.5\n2\t\\N\t1.5\n3\twith\\ttab\t\\N\n")
        with c.cursor().copy("COPY copied (id, label) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            copy.write('id,label\n4,"quoted, comma"\n5,\n')
        with c.cursor(binary=True).copy("COPY copied FROM STDIN WITH (FORMAT binary)") as copy:
            copy.set_types(["int4", "text", "float8"])
            copy.write_row((6, "binary", 2.5))
            copy.write_row((7, None, None))
        rows = c.execute("SELECT id, label, score FROM copied ORDER BY id").fetchall()
        assert rows == [(1, "one", 0.5), (2, None, 1.5), (3, "with\ttab", None),
                        (4, "quoted, comma", None), (5, None, None), (6, "binary", 2.5), (7, None, None)]
        with c.cursor().copy("COPY (SELECT id, label FROM copied WHERE id <= 3 ORDER BY id) TO STDOUT") as copy:
            text = b"".join(bytes(chunk) for chunk in copy)
        assert text == b"1\tone\n2\t\\N\n3\twith\\ttab\n"
        with c.cursor().copy("COPY copied TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            csv_text = b"".join(bytes(chunk) for chunk in copy).decode()
        assert csv_text.splitlines()[0] == '"id","label","score"' or csv_text.splitlines()[0] == "id,label,score"
        assert '"quoted, comma"' in csv_text
        with c.cursor(binary=True).copy("COPY (SELECT id, score FROM copied WHERE id = 6) TO STDOUT "
                                        "WITH (FORMAT binary)") as copy:
            copy.set_types(["int4", "float8"])
            assert list(copy.rows()) == [(6, 2.5)]
        # a bad row: clear error, nothing of that COPY written
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with c.cursor().copy("COPY copied FROM STDIN") as copy:
                copy.write("8\teight\t1.0\n9\tnine\tnot-a-number\n")
        assert c.execute("SELECT count(*) FROM copied WHERE id IN (8, 9)").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM copied").fetchone() == (7,)


def test_asyncpg_binary_protocol_types_and_cursor(server):
    async def main():
        c = await asyncpg.connect(server.dsn())
        try:
            assert await c.fetchval("SELECT name FROM items WHERE id = $1", 1) == "apple"
            row = await c.fetchrow("SELECT id, price, seen FROM items WHERE id = $1 AND name = $2", 1, "apple")
            assert row["price"] == decimal.Decimal("1.25")
            assert row["seen"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
            assert await c.fetchval("SELECT array_agg(id ORDER BY id) FROM items WHERE id <= $1", 3) == [1, 2, 3]
            await c.execute("INSERT INTO items (id, name, seen) VALUES ($1, $2, $3)", 20, "async",
                            dt.datetime(2025, 5, 6, tzinfo=dt.timezone.utc))
            assert await c.fetchval("SELECT seen FROM items WHERE id = 20") == \
                dt.datetime(2025, 5, 6, tzinfo=dt.timezone.utc)
            await c.executemany("INSERT INTO items (id, name) VALUES ($1, $2)", [(21, "a"), (22, "b")])
            async with c.transaction():  # a portal read in chunks: Execute with a row limit
                ids = [r["id"] async for r in c.cursor("SELECT id FROM items ORDER BY id", prefetch=2)]
            assert ids[:3] == [1, 2, 3] and 21 in ids and 22 in ids
            await c.execute("DELETE FROM items WHERE id >= 20")
        finally:
            await c.close()
    asyncio.run(main())


def test_pgvector_with_psycopg_and_asyncpg(server):
    from pgvector.psycopg import register_vector
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        register_vector(c)
        c.execute("INSERT INTO items (id, name, emb) VALUES (%s, %s, %s)", (30, "vec", np.array([0.9, 0.1, 0.0])))
        rows = c.execute("SELECT id FROM items ORDER BY emb <-> %s LIMIT 2", (np.array([1.0, 0.0, 0.0]),)).fetchall()
        assert rows == [(1,), (30,)]
        emb = c.execute("SELECT emb FROM items WHERE id = 30").fetchone()[0]
        assert np.allclose(emb.to_numpy(), [0.9, 0.1, 0.0])

    async def main():
        from pgvector.asyncpg import register_vector as register_async
        c = await asyncpg.connect(server.dsn())
        try:
            await register_async(c)
            got = await c.fetch("SELECT id, emb FROM items ORDER BY emb <=> $1 LIMIT 1", np.array([0.0, 0.0, 2.0]))
            assert got[0]["id"] == 3 and np.allclose(got[0]["emb"].to_numpy(), [0, 0, 1])
        finally:
            await c.close()
    asyncio.run(main())
    with psycopg.connect(server.conninfo(), autocommit=True) as c:
        c.execute("DELETE FROM items WHERE id = 30")


def _psql(server, command: str) -> str:
    done = subprocess.run(["psql", "-h", server.host, "-p", str(server.port), "-U", "tester", "-d", "omnilake",
                           "-X", "-v", "ON_ERROR_STOP=1", "-c", command],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (postgresql-client) not installed")
def test_psql_meta_commands(server):
    assert "items" in _psql(server, r"\dt")
    described = _psql(server, r"\d items")
    assert "vector(3)" in described and "numeric(10,2)" in described and "not null" in described
    assert "items_pkey" in described and "PRIMARY KEY" in described
    assert "omnilake" in _psql(server, r"\l")
    assert "public" in _psql(server, r"\dn")
    assert "items_pkey" in _psql(server, r"\di")
    assert "vector" in _psql(server, r"\dx")
    assert "apple" in _psql(server, "SELECT name FROM items WHERE id = 1")


def test_sqlalchemy_inspector_orm_and_pandas(server):
    sa = pytest.importorskip("sqlalchemy")
    pd = pytest.importorskip("pandas")
    engine = sa.create_engine(f"postgresql+psycopg://tester@{server.host}:{server.port}/omnilake")
    try:
        inspector = sa.inspect(engine)
        assert "items" in inspector.get_table_names()
        columns = {c["name"]: c for c in inspector.get_columns("items")}
        assert str(columns["price"]["type"]) == "NUMERIC(10, 2)" and columns["name"]["nullable"] is False
        assert inspector.get_pk_constraint("items")["constrained_columns"] == ["id"]
        assert isinstance(inspector.get_indexes("items"), list)
        metadata = sa.MetaData()
        notes = sa.Table("notes", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                         sa.Column("body", sa.Text))
        metadata.create_all(engine)
        with engine.begin() as c:
            c.execute(notes.insert(), [{"id": 1, "body": "a"}, {"id": 2, "body": "b"}])
        with engine.connect() as c:
            assert c.execute(sa.select(notes.c.body).where(notes.c.id == 2)).scalar_one() == "b"
        with engine.begin() as c:  # one transaction: UPDATE, DELETE and INSERT commit together
            c.execute(notes.update().where(notes.c.id == 1).values(body="changed"))
            c.execute(notes.delete().where(notes.c.id == 2))
            c.execute(notes.insert(), [{"id": 3, "body": "c"}])
        with engine.connect() as c:
            assert c.execute(sa.select(notes.c.id, notes.c.body).order_by(notes.c.id)).all() == [
                (1, "changed"), (3, "c")]
        frame = pd.read_sql("SELECT id, name FROM items ORDER BY id", engine)
        assert list(frame["name"][:3]) == ["apple", "pear", "plum"]
    finally:
        engine.dispose()


JDBC_JAR = "/usr/share/java/postgresql.jar"


@pytest.mark.skipif(shutil.which("javac") is None or not os.path.exists(JDBC_JAR),
                    reason="needs a JDK and libpostgresql-jdbc-java")
def test_pgjdbc_metadata(server, tmp_path):
    source = tmp_path / "Probe.java"
    source.write_text("""
import java.sql.*;
public class Probe {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], "tester", "")) {
      DatabaseMetaData md = c.getMetaData();
      try (ResultSet r = md.getTables(null, "public", "items", null)) { while (r.next()) System.out.println("table " + r.getString("TABLE_NAME")); }
      try (ResultSet r = md.getColumns(null, "public", "items", null)) { while (r.next()) System.out.println("column " + r.getString("COLUMN_NAME")); }
      try (ResultSet r = md.getPrimaryKeys(null, "public", "items")) { while (r.next()) System.out.println("pk " + r.getString("COLUMN_NAME") + " " + r.getInt("KEY_SEQ")); }
      try (PreparedStatement p = c.prepareStatement("SELECT name FROM items WHERE id = ?")) {
        p.setLong(1, 2); try (ResultSet r = p.executeQuery()) { r.next(); System.out.println("name " + r.getString(1)); } }
    }
  }
}""")
    subprocess.run(["javac", "-d", str(tmp_path), str(source)], check=True, timeout=120)
    url = f"jdbc:postgresql://{server.host}:{server.port}/omnilake"
    done = subprocess.run(["java", "-cp", f"{tmp_path}:{JDBC_JAR}", "Probe", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "table items" in done.stdout and "column emb" in done.stdout and "name pear" in done.stdout
    assert "pk id 1" in done.stdout


NODE_SCRIPT = """
const { Client } = require('pg');
(async () => {
  const c = new Client({ host: process.argv[2], port: Number(process.argv[3]), user: 'tester', database: 'omnilake' });
  await c.connect();
  const r = await c.query('SELECT id, name, price FROM items WHERE id = $1', [2]);
  console.log(JSON.stringify(r.rows));
  const t = await c.query('SELECT count(*)::int AS n FROM items');
  console.log(JSON.stringify(t.rows));
  try { await c.query('SELECT * FROM missing_table'); } catch (e) { console.log('error ' + e.code); }
  await c.end();
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_pg(tmp_path_factory):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js not installed")
    folder = tmp_path_factory.mktemp("node")
    done = subprocess.run(["npm", "install", "pg@8", "--silent", "--no-audit", "--no-fund"], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"could not install node-postgres: {done.stderr[-300:]}")
    return folder


def test_node_postgres(server, node_pg):
    script = node_pg / "probe.js"
    script.write_text(NODE_SCRIPT)
    done = subprocess.run(["node", str(script), server.host, str(server.port)], capture_output=True,
                          text=True, timeout=120, cwd=node_pg)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == '[{"id":"2","name":"pear","price":"2.50"}]'  # int8 and numeric as text
    assert lines[1] == '[{"n":3}]'
    assert lines[2] == "error 42P01"
