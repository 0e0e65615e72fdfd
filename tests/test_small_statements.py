"""A statement over few rows is planned as one DataFusion partition (engine/planning.py);
larger ones get the configured parallelism, also when both kinds are planned at once from
several threads."""

import threading

import numpy as np
import pyarrow as pa

import omnilake
from omnilake.engine import query
from omnilake.engine.planning import SMALL_STATEMENT_ROWS


def _explain(conn, sql: str) -> str:
    return "\n".join(str(v) for row in conn.sql("EXPLAIN " + sql).fetchall() for v in row)


def _setup(tmp_path):
    conn = omnilake.connect(str(tmp_path / "wh"), target_partitions=2)
    conn.sql("CREATE TABLE small (k INT, v DOUBLE PRECISION)")
    conn.sql("CREATE TABLE big (k INT, v DOUBLE PRECISION)")
    rng = np.random.default_rng(0)
    conn.insert("small", pa.table({"k": pa.array(rng.integers(0, 5, 100), pa.int32()),
                                   "v": rng.random(100)}))
    n = SMALL_STATEMENT_ROWS + 1000
    conn.insert("big", pa.table({"k": pa.array(rng.integers(0, 5, n), pa.int32()),
                                 "v": rng.random(n)}))
    return conn


GROUP = "SELECT k, count(*) AS n, sum(v) AS s FROM {} GROUP BY k ORDER BY k"


def test_small_statements_plan_one_partition_and_large_ones_keep_theirs(tmp_path):
    conn = _setup(tmp_path)
    assert "RepartitionExec" not in _explain(conn, GROUP.format("small"))
    assert "RepartitionExec" in _explain(conn, GROUP.format("big"))
    # after a small statement the context plans with its own setting again
    assert "RepartitionExec" not in _explain(conn, GROUP.format("small"))
    assert "RepartitionExec" in _explain(conn, GROUP.format("big"))
    # a join of two tables counts both
    join = "SELECT count(*) FROM small s JOIN big b ON s.k = b.k"
    assert "RepartitionExec" in _explain(conn, join)


def test_results_do_not_depend_on_the_partitions(tmp_path, monkeypatch):
    conn = _setup(tmp_path)
    small = conn.sql(GROUP.format("small")).fetchall()
    monkeypatch.setattr(query, "SMALL_STATEMENT_ROWS", -1)  # every statement: all partitions
    assert "RepartitionExec" in _explain(conn, GROUP.format("small"))
    parallel = conn.sql(GROUP.format("small")).fetchall()
    assert [r[:2] for r in parallel] == [r[:2] for r in small]
    assert np.allclose([r[2] for r in parallel], [r[2] for r in small])
    data = conn.sql("SELECT k, v FROM small").to_arrow().to_pandas()
    expected = data.groupby("k").agg(n=("v", "size"), s=("v", "sum")).reset_index()
    assert [r[0] for r in small] == expected["k"].tolist()
    assert [r[1] for r in small] == expected["n"].tolist()
    assert np.allclose([r[2] for r in small], expected["s"])


def test_concurrent_planning_never_sees_another_statements_setting(tmp_path):
    conn = _setup(tmp_path)
    engine = conn._engine
    failures = []

    def work(table: str, repartitioned: bool):
        session = omnilake.dbapi.Connection(engine)
        try:
            for _ in range(15):
                text = _explain(session, GROUP.format(table))
                if ("RepartitionExec" in text) != repartitioned:
                    failures.append((table, text))
        finally:
            session.close()

    threads = [threading.Thread(target=work, args=(t, t == "big"))
               for t in ("small", "big", "small", "big")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_small_statement_streams_what_it_returns(tmp_path):
    """Small single-table statements are collected at once where a stream was asked for
    (query.BoundQuery.stream): the same schema and rows as run(), empty results included."""
    conn = omnilake.connect(str(tmp_path / "wh"), target_partitions=2)
    conn.sql("CREATE TABLE t (id BIGINT, name TEXT, at TIMESTAMPTZ, v VECTOR(2))")
    conn.sql("INSERT INTO t VALUES (1, 'a', '2024-01-01 00:00:00+00', '[1,2]'), "
             "(2, NULL, NULL, NULL), (3, 'c', '2024-01-02 00:00:00+00', '[3,4]')")
    session = conn._session
    for sql in ["SELECT name, at, v FROM t WHERE id = 3",
                "SELECT * FROM t WHERE id = 99",
                "SELECT name, count(*) AS n FROM t GROUP BY name ORDER BY name",
                "SELECT a.id, b.id FROM t a CROSS JOIN t b ORDER BY 1, 2",
                "WITH x AS (SELECT id FROM t) SELECT * FROM x ORDER BY id"]:
        ran = session.run(session.parse(sql)[0]).table
        streamed = session.stream(session.parse(sql)[0])
        batches = list(streamed.batches)
        got = pa.Table.from_batches(batches, schema=streamed.schema)
        assert got.schema.equals(ran.schema, check_metadata=True), sql
        assert got.to_pylist() == ran.to_pylist(), sql
