"""embed() in SQL, generated embedding columns, registered models, pgvector operators."""

import numpy as np
import pytest

import omnilake
from omnilake import errors as E

from conftest import rows


@pytest.fixture(scope="module")
def model_ready():
    from omnilake.gpu.models import fetch
    return fetch("minilm")


@pytest.fixture
def docs(cur, model_ready):
    cur.execute("""CREATE TABLE docs (id INT, body TEXT,
                   emb VECTOR(384) GENERATED ALWAYS AS (embed(body)) STORED)""")
    cur.executemany("INSERT INTO docs (id, body) VALUES (%s, %s)", [
        (1, "The pump is vibrating and the bearing makes noise"),
        (2, "Invoice 4411 is overdue, please pay"),
        (3, "The temperature sensor reads minus forty degrees"),
        (4, None), (5, "")])
    return cur


def test_generated_column_filled_at_insert_and_searchable(docs):
    assert rows(docs, "SELECT id FROM docs ORDER BY emb <=> embed('machine failure, broken motor') "
                      "LIMIT 1") == [(1,)]
    assert rows(docs, "SELECT id FROM docs ORDER BY emb <=> embed('unpaid bill') LIMIT 1") == [(2,)]
    assert rows(docs, "SELECT id, emb IS NULL FROM docs ORDER BY id") == [
        (1, False), (2, False), (3, False), (4, True), (5, False)]
    (emb,), = rows(docs, "SELECT emb FROM docs WHERE id = 2")
    assert len(emb) == 384 and abs(np.linalg.norm(emb) - 1) < 1e-5


def test_embed_matches_the_encoder_and_handles_null_and_empty(docs, model_ready):
    from omnilake.gpu.encoder import TextEncoder
    direct = TextEncoder(model_ready).encode(["Invoice 4411 is overdue, please pay", ""])
    (a,), = rows(docs, "SELECT emb FROM docs WHERE id = 2")
    (b,), = rows(docs, "SELECT embed('') AS e")
    np.testing.assert_allclose(a, direct[0], atol=1e-5)
    np.testing.assert_allclose(b, direct[1], atol=1e-5)
    assert rows(docs, "SELECT embed(NULL) IS NULL") == [(True,)]
    # Equal to float rounding, not bit for bit: on a GPU the batch's shape (rows, padding)
    # changes the matrix products' summation order.
    assert rows(docs, "SELECT emb <-> embed(body, 'minilm') < 1e-5 FROM docs WHERE id = 1") == [(True,)]


def test_update_recomputes_generated_values(docs):
    docs.execute("UPDATE docs SET body = 'overdue payment reminder' WHERE id = 3")
    assert rows(docs, "SELECT id FROM docs WHERE id <> 2 ORDER BY emb <=> embed('unpaid bill') "
                      "LIMIT 1") == [(3,)]
    docs.execute("UPDATE docs SET body = upper(body) WHERE length(body) > 40 OR id = 4")
    (a,), = rows(docs, "SELECT emb FROM docs WHERE id = 1")
    (b,), = rows(docs, "SELECT embed('THE PUMP IS VIBRATING AND THE BEARING MAKES NOISE') AS e")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_generated_columns_reject_direct_values(docs):
    with pytest.raises(E.Error) as info:
        docs.execute("INSERT INTO docs VALUES (9, 'x', NULL)")
    assert info.value.sqlstate == "428C9"
    with pytest.raises(E.Error) as info:
        docs.execute("UPDATE docs SET emb = NULL")
    assert info.value.sqlstate == "428C9"
    with pytest.raises(E.DependentObjectsStillExist):
        docs.execute("ALTER TABLE docs DROP COLUMN body")
    docs.execute("ALTER TABLE docs RENAME COLUMN body TO text")
    docs.execute("INSERT INTO docs (id, text) VALUES (10, 'the compressor broke down')")
    assert rows(docs, "SELECT id FROM docs ORDER BY emb <=> embed('compressor broke') LIMIT 1") == [(10,)]


def test_generated_column_survives_reopen(warehouse, model_ready):
    with omnilake.connect(warehouse) as conn:
        conn.sql("CREATE TABLE g (t TEXT, e VECTOR(384) GENERATED ALWAYS AS (embed(t)) STORED)")
    with omnilake.connect(warehouse) as conn:
        conn.sql("INSERT INTO g (t) VALUES ('hello')")
        assert conn.sql("SELECT e IS NOT NULL FROM g").fetchall() == [(True,)]


def test_register_embedding_for_any_callable(conn, cur):
    calls = []

    def byte_histogram(values):
        calls.append(len(values))
        return np.array([[v.count(b"\x00"), len(v), 1.0] for v in values], dtype=np.float32)

    conn.register_embedding("bytes3", byte_histogram, 3, input_type="bytea")
    cur.execute("CREATE TABLE blobs (b BYTEA, e VECTOR(3) GENERATED ALWAYS AS (embed(b, 'bytes3')) STORED)")
    cur.executemany("INSERT INTO blobs (b) VALUES (%s)", [(b"\x00\x00ab",), (b"xyz",), (None,)])
    assert rows(cur, "SELECT e FROM blobs ORDER BY e <-> '[0, 3, 1]' NULLS LAST") == [
        ([0.0, 3.0, 1.0],), ([2.0, 4.0, 1.0],), (None,)]
    assert calls == [2]  # one call per batch, NULLs never reach the model
    with pytest.raises(E.UndefinedFunction, match="no embedding model"):
        cur.execute("SELECT embed('x', 'nope')")
    with pytest.raises(E.InvalidParameterValue):
        conn.register_embedding("Bad Name", byte_histogram, 3)
    conn.register_embedding("wrong", lambda values: np.zeros((len(values), 2)), 3)
    with pytest.raises(E.Error, match="shape"):
        cur.execute("SELECT embed('x', 'wrong')")


def test_pgvector_operators(cur):
    cur.execute("CREATE TABLE v (id INT, e VECTOR(2))")
    cur.execute("INSERT INTO v VALUES (1, '[1, 0]'), (2, '[0, 1]'), (3, '[1, 1]')")
    assert rows(cur, "SELECT id FROM v ORDER BY e <-> '[0.9, 0.1]' LIMIT 2") == [(1,), (3,)]
    assert rows(cur, "SELECT id FROM v ORDER BY e <=> '[0.1, 0.9]'::vector LIMIT 1") == [(2,)]
    assert rows(cur, "SELECT id FROM v ORDER BY e <-> %s LIMIT 1", ([0.0, 1.0],)) == [(2,)]
    (d,), = rows(cur, "SELECT e <-> '[4, 5]' FROM v WHERE id = 1")
    assert d == pytest.approx(np.hypot(3, 5))
    # IS NOT DISTINCT FROM keeps its meaning beside the `<=>` operator
    assert rows(cur, "SELECT count(*) FROM v WHERE id IS NOT DISTINCT FROM 2") == [(1,)]
