"""A plain nearest-neighbour query takes its result straight from the search's rows
(engine/search_result.py): the same rows, names, types and distances as DataFusion gives."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from omnilake.engine import query, search_result

from conftest import fast_and_general

DIM = 8


@pytest.fixture
def items(conn):
    """Rows in a data file with an HNSW index, in a file without one, and in the memtable;
    text, bytes, a NULL vector and a zero vector among them."""
    rng = np.random.default_rng(7)
    conn.execute(f"CREATE TABLE items (id BIGINT, cat INT, title TEXT, body BYTEA, "
                 f"v VECTOR({DIM}))")

    def batch(start, n):
        vectors = rng.normal(size=(n, DIM)).astype(np.float32)
        vectors[0] = 0.0
        valid = np.ones(n, bool)
        valid[1] = False  # one row without a vector
        ids = np.arange(start, start + n)
        return pa.table({"id": ids, "cat": (ids % 10).astype(np.int32),
                         "title": [f"item {i}" for i in ids],
                         "body": [bytes([i % 256]) for i in ids],
                         "v": pa.FixedSizeListArray.from_arrays(
                             pa.array(vectors.ravel()), DIM, mask=pa.array(~valid))})
    conn.insert("items", batch(0, 400))
    conn.flush("items")
    conn.execute("CREATE INDEX items_v ON items USING hnsw (v vector_l2_ops)")
    conn.insert("items", batch(400, 200))
    conn.flush("items")
    conn.insert("items", batch(600, 50))  # memtable
    return conn


def _both(conn, sql, params, monkeypatch):
    """(direct result, DataFusion result) of one statement, and whether the direct path ran
    (the statement bound as usual: not planned from its text)."""
    monkeypatch.setattr(search_result, "run", lambda session, statement, values: None)
    used = []
    original = query.direct_result

    def direct(bound):
        result = original(bound)
        used.append(result is not None)
        return result
    monkeypatch.setattr(query, "direct_result", direct)
    fast = conn.sql(sql, params).to_arrow()
    monkeypatch.setattr(query, "direct_result", lambda bound: None)
    slow = conn.sql(sql, params).to_arrow()
    return fast, slow, used == [True]


DIRECT = [
    "SELECT id FROM items ORDER BY v <-> %s LIMIT 10",
    "SELECT * FROM items ORDER BY v <-> %s LIMIT 7",
    "SELECT id, title, body FROM items WHERE cat = 3 ORDER BY v <-> %s LIMIT 5",
    "SELECT i.id AS key, i.title FROM items AS i ORDER BY i.v <-> %s LIMIT 5 OFFSET 3",
    "SELECT id, v <-> %s AS distance FROM items ORDER BY distance LIMIT 10",
    "SELECT id, v <=> %s AS d FROM items ORDER BY v <=> %s LIMIT 10",
    "SELECT id, v <#> %s AS d FROM items ORDER BY v <#> %s LIMIT 10",
    "SELECT id, v <+> %s AS d, id FROM items ORDER BY v <+> %s LIMIT 10",
    "SELECT id, inner_product(v, %s) AS s FROM items ORDER BY inner_product(v, %s) DESC NULLS LAST "
    "LIMIT 4",
    "SELECT id, v <-> %s FROM items ORDER BY v <-> %s LIMIT 3",  # unnamed: `?column?`
    "SELECT id, v FROM items WHERE cat < 5 AND title <> 'item 3' ORDER BY v <-> %s LIMIT 700",
]


@pytest.mark.parametrize("sql", DIRECT)
def test_direct_result_equals_datafusion(items, sql, monkeypatch):
    q = np.random.default_rng(len(sql)).normal(size=DIM).astype(np.float32)
    params = (q,) * sql.count("%s")
    fast, slow, used = _both(items, sql, params, monkeypatch)
    assert used, "the statement should not need DataFusion"
    assert fast.schema == slow.schema
    assert fast.schema.metadata == slow.schema.metadata
    assert [f.metadata for f in fast.schema] == [f.metadata for f in slow.schema]
    assert fast.num_rows == slow.num_rows > 0
    # Rows at equal distances (those without a vector) may come in any order: compare the
    # rows by their first column (the id), the order in test_results_are_nearest_first.
    fast, slow = (t.take(pc.sort_indices(t.column(0))) for t in (fast, slow))
    for i, field in enumerate(fast.schema):
        a, b = fast.column(i).to_pylist(), slow.column(i).to_pylist()
        if pa.types.is_floating(field.type):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
        else:
            assert a == b


def test_results_are_nearest_first(items, monkeypatch):
    q = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    sql = "SELECT id, v <-> %s AS d FROM items WHERE cat < 5 ORDER BY d LIMIT 100 OFFSET 5"
    fast, slow, used = _both(items, sql, (q,), monkeypatch)
    assert used
    d = fast.column("d").to_pylist()
    assert d == sorted(d) and len(d) == 100
    assert fast.column("id").to_pylist() == slow.column("id").to_pylist()


def test_null_and_zero_vectors_come_last_or_null(items, monkeypatch):
    """Every row is asked for: those without a vector come last, with a NULL distance, and
    a zero vector's cosine distance is NULL, as DataFusion computes it."""
    q = np.ones(DIM, np.float32)
    fast, slow, used = _both(items, "SELECT id, v <=> %s AS d FROM items "
                             "ORDER BY v <=> %s LIMIT 1000", (q, q), monkeypatch)
    assert used and fast.num_rows == slow.num_rows == 650
    d = fast.column("d").to_pylist()
    assert d.count(None) == 6  # 3 rows without a vector, 3 zero vectors
    assert d[:-6] == sorted(d[:-6]) and None not in d[:-6]
    ids = fast.column("id").to_pylist()
    assert set(ids[-6:]) == set(slow.column("id").to_pylist()[-6:]) == {0, 1, 400, 401, 600, 601}


NOT_DIRECT = [
    "SELECT id + 1 AS next FROM items ORDER BY v <-> %s LIMIT 3",
    "SELECT upper(title) AS t FROM items ORDER BY v <-> %s LIMIT 3",
    "SELECT id, v <-> %s AS d FROM items ORDER BY v <=> %s LIMIT 3",  # another distance
    "WITH n AS (SELECT id FROM items ORDER BY v <-> %s LIMIT 3) SELECT id FROM n",
]


@pytest.mark.parametrize("sql", NOT_DIRECT)
def test_other_statements_still_run_on_datafusion(items, sql, monkeypatch):
    q = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    fast, slow, used = _both(items, sql, (q,) * sql.count("%s"), monkeypatch)
    assert not used
    assert fast.equals(slow)


def test_stream_and_explain_of_a_direct_statement(items):
    q = np.random.default_rng(2).normal(size=DIM).astype(np.float32)
    sql = "SELECT id, title FROM items ORDER BY v <-> %s LIMIT 5"
    expected = items.sql(sql, (q,)).to_arrow()
    streamed = items.stream(sql, (q,)).read_all()
    assert streamed.equals(expected)
    plan = items.execute("EXPLAIN " + sql, (q,)).fetchall()
    assert [kind for kind, _ in plan] == ["omnilake_scan", "omnilake_result"]
    assert plan[0][1].startswith("VectorSearch") and "columns=[id, title] rows=5" in plan[1][1]
    other = items.execute("EXPLAIN SELECT id + 1 FROM items ORDER BY v <-> %s LIMIT 5",
                          (q,)).fetchall()  # runs on DataFusion: its plan is shown
    assert other[0][1].startswith("VectorSearch") and len(other) > 2
    assert "omnilake_result" not in [kind for kind, _ in other]


def test_wrong_dimensions_still_an_error(items):
    from omnilake import errors as E
    with pytest.raises(E.DataError, match="different vector dimensions"):
        items.execute("SELECT id FROM items ORDER BY v <-> %s LIMIT 3", (np.ones(3),))


PLANNED = [
    ("SELECT id FROM items ORDER BY v <-> %s LIMIT 10", True),
    ("SELECT * FROM items ORDER BY v <=> %s LIMIT 7", True),
    ("SELECT i.id AS key, i.title, body FROM items AS i ORDER BY i.v <#> $1 LIMIT 700", True),
    ("SELECT id FROM items ORDER BY v <+> %s::vector LIMIT 3", True),
    ("SELECT id, v <-> %s AS d FROM items ORDER BY d LIMIT 5", True),
    ("SELECT id, v <=> %s AS d FROM items ORDER BY v <=> %s LIMIT 10", True),
    ("SELECT id, v <+> $1 FROM items ORDER BY v <+> $1 LIMIT 3", True),  # `?column?`
    ("SELECT v <#> $1 AS s, * FROM items ORDER BY s LIMIT 4", True),
    ("SELECT id FROM items WHERE cat = 3 ORDER BY v <-> %s LIMIT 5", False),  # bound as usual
    ("SELECT id FROM items ORDER BY v <-> %s LIMIT 5 OFFSET 2", False),
    ("SELECT id, v <-> %s AS d FROM items ORDER BY v <=> %s LIMIT 3", False),  # two metrics
    ("SELECT id, v <-> %s AS d, v <-> %s AS e FROM items ORDER BY d LIMIT 3", True),
    ("SELECT id AS d, v <-> %s AS d FROM items ORDER BY v <-> %s LIMIT 3", False),  # twins
]


@pytest.mark.parametrize("sql, planned", PLANNED)
def test_searches_planned_from_the_text_equal_the_general_path(items, sql, planned, monkeypatch):
    """A search statement planned once from its text (search_result.plan) gives the rows,
    names and types that binding it and running it gives, for NumPy, list and text
    (pgvector's form, as wire clients send it) parameters."""
    for q in (np.random.default_rng(3).normal(size=DIM).astype(np.float32),
              [0.5] * DIM, np.arange(DIM),
              "[" + ", ".join(f"{x:.6f}" for x in np.random.default_rng(4).normal(size=DIM)) + "] "):
        params = (q,) * (sql.count("%s") + ("$1" in sql))
        fast, slow, used = fast_and_general(monkeypatch, search_result,
                                            lambda s=sql, p=params: items.sql(s, p).to_arrow())
        assert used is planned
        assert fast.schema.equals(slow.schema, check_metadata=True)
        assert fast.to_pylist() == slow.to_pylist()


@pytest.mark.parametrize("param", [[1.0] * (DIM + 1), "[1,2,3,4,5,6,7]", "[1,2,3,4,5,6,7,x]",
                                   "[1,2,3,4,5,6,7,nan]", "1,2,3,4,5,6,7,8", "[]",
                                   [1, "2"] * (DIM // 2), [[1.0] * DIM]])
def test_planned_searches_leave_other_parameters_to_the_general_path(items, param, monkeypatch):
    """Text that is not a vector of the column's dimension (or has NaN), mixed lists, nested
    lists, wrong dimensions: the general path's answer or error."""
    sql = "SELECT id FROM items ORDER BY v <-> %s LIMIT 3"

    def outcome():
        try:
            return items.sql(sql, (param,)).fetchall()
        except Exception as exc:  # noqa: BLE001 - compared with the general path's own error
            return type(exc)
    got = outcome()
    monkeypatch.setattr(search_result, "run", lambda session, statement, values: None)
    assert got == outcome()


def test_a_search_whose_two_query_vectors_differ_is_bound_as_usual(items, monkeypatch):
    sql = "SELECT id, v, v <-> %s AS d FROM items ORDER BY v <-> %s LIMIT 5"
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=DIM).astype(np.float32), rng.normal(size=DIM).astype(np.float32)
    fast, slow, used = fast_and_general(monkeypatch, search_result,
                                        lambda: items.sql(sql, (a, b)).to_arrow())
    assert not used and fast.to_pylist() == slow.to_pylist()
    for row in fast.to_pylist():  # the distance to a, the order by the distance to b
        assert row["d"] == pytest.approx(np.linalg.norm(np.array(row["v"]) - a), rel=1e-6)


@pytest.mark.parametrize("sql", [
    "SELECT id, v <-> $1 AS d FROM items ORDER BY d LIMIT 5",
    "SELECT count(*), id FROM items ORDER BY v <-> $1 LIMIT 5",
    "SELECT id FROM items WHERE id = $1",
    "SELECT upper(title) FROM items WHERE id = 3",
])
def test_planning_from_the_text_leaves_the_parsed_statement_as_it_was(sql):
    """The parsed statement is the engine's cached parse: planning reads it, never moves a
    node (a node's parent changed under the cache would mislead later walks)."""
    import sqlglot

    from omnilake.engine import key_lookup
    from omnilake.engine.dialect import Postgres
    tree = sqlglot.parse_one(sql.replace("$1", "$1 "), dialect=Postgres)
    before = repr(tree)
    key_lookup.plan(tree)
    search_result.plan(tree)
    assert repr(tree) == before
    for node in tree.walk():
        for child in node.iter_expressions():
            assert child.parent is node, (sql, child)


@pytest.fixture
def loaded(conn):
    """A loaded, indexed collection: one data file, its HNSW segment, nothing pending; text,
    bytes, a NULL vector and a zero vector among the rows."""
    rng = np.random.default_rng(5)
    n = 300
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors[0] = 0.0
    valid = np.ones(n, bool)
    valid[1] = False
    ids = np.arange(n)
    conn.execute(f"CREATE TABLE docs (id BIGINT, title TEXT, body BYTEA, v VECTOR({DIM}))")
    conn.insert("docs", pa.table({
        "id": ids, "title": [f"doc {i}" for i in ids], "body": [bytes([i % 256]) for i in ids],
        "v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM,
                                               mask=pa.array(~valid))}))
    conn.flush("docs")
    conn.execute("CREATE INDEX docs_v ON docs USING hnsw (v vector_l2_ops)")
    conn.execute("CREATE INDEX docs_c ON docs USING hnsw (v vector_cosine_ops)")
    return conn


def _one_file_calls(monkeypatch):
    """The results run_one_file gives (None: it left the statement to run())."""
    from omnilake.engine import vector_search
    calls, original = [], vector_search.run_one_file

    def counted(*args):
        found = original(*args)
        calls.append(found)
        return found
    monkeypatch.setattr(vector_search, "run_one_file", counted)
    return calls


ONE_FILE = [
    "SELECT id FROM docs ORDER BY v <-> %s LIMIT 10",
    "SELECT * FROM docs ORDER BY v <=> %s LIMIT 7",
    "SELECT d.id AS key, d.title, body FROM docs AS d ORDER BY d.v <-> $1 LIMIT 300",
    "SELECT id, v <-> %s AS d FROM docs ORDER BY d LIMIT 5",
    "SELECT v <=> $1 AS s, title FROM docs ORDER BY s LIMIT 4",
]


@pytest.mark.parametrize("sql", ONE_FILE)
def test_a_loaded_collection_is_searched_on_its_one_file(loaded, sql, monkeypatch):
    """One indexed data file and nothing pending: the search runs on that file's segment
    alone (run_one_file), with the rows, names and types of the general path."""
    calls = _one_file_calls(monkeypatch)
    for q in (np.random.default_rng(9).normal(size=DIM).astype(np.float32), [0.25] * DIM):
        params = (q,) * (sql.count("%s") + ("$1" in sql))
        fast, slow, used = fast_and_general(monkeypatch, search_result,
                                            lambda s=sql, p=params: loaded.sql(s, p).to_arrow())
        assert used
        assert fast.schema.equals(slow.schema, check_metadata=True)
        assert fast.to_pylist() == slow.to_pylist()
    assert calls and all(found is not None for found in calls)


def test_the_one_file_search_sees_new_rows_deletes_and_new_files(loaded, monkeypatch):
    """Rows written since (pending, then in a second file) and deleted rows: the one-file
    search steps aside, and every answer is the general path's."""
    calls = _one_file_calls(monkeypatch)
    sql = "SELECT id FROM docs ORDER BY v <-> %s LIMIT 3"
    q = np.full(DIM, 7.0, np.float32)

    def nearest():
        """The nearest id, checked against the general path; and whether run_one_file ran."""
        calls.clear()
        fast, slow, used = fast_and_general(monkeypatch, search_result,
                                            lambda: loaded.sql(sql, (q,)).to_arrow())
        assert used and fast.to_pylist() == slow.to_pylist()
        return fast.column("id")[0].as_py(), bool(calls)

    before, one_file = nearest()
    assert one_file
    loaded.execute("INSERT INTO docs (id, v) VALUES (1000, %s)", (q,))
    assert nearest() == (1000, False)  # pending rows: searched exactly, merged
    loaded.flush("docs")
    assert nearest() == (1000, False)  # two files
    loaded.execute("DELETE FROM docs WHERE id = 1000")
    assert nearest()[0] == before


def test_a_one_file_search_that_falls_short_is_left_to_the_general_path(loaded, monkeypatch):
    """Fewer rows found than asked for, even at the widest search (a stub segment that finds
    nothing): run_one_file declines, and run() searches exactly."""
    from omnilake.gpu import ann
    calls = _one_file_calls(monkeypatch)
    monkeypatch.setattr(ann.AnnIndex, "search", lambda self, queries, k, breadth, allowed=None: (
        np.full((len(queries), k), np.inf, np.float32), np.full((len(queries), k), -1)))
    q = np.random.default_rng(2).normal(size=DIM).astype(np.float32)
    got = loaded.sql("SELECT id FROM docs ORDER BY v <-> %s LIMIT 5", (q,)).fetchall()
    assert calls == [None]
    matrix = np.random.default_rng(5).normal(size=(300, DIM)).astype(np.float32)
    matrix[0] = 0.0
    distances = np.linalg.norm(matrix - q, axis=1)
    distances[1] = np.inf  # the row without a vector
    assert [r[0] for r in got] == np.argsort(distances, kind="stable")[:5].tolist()


def test_a_zero_vector_ranks_last_by_cosine_on_the_one_file_path(loaded, monkeypatch):
    """A zero vector has no cosine: its distance is NULL (NaN inside) and it comes after
    every row that has one, as on the general path (faiss alone would give it 1)."""
    calls = _one_file_calls(monkeypatch)
    sql = "SELECT id, v <=> %s AS d FROM docs ORDER BY v <=> %s LIMIT 300"
    q = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    fast, slow, used = fast_and_general(monkeypatch, search_result,
                                        lambda: loaded.sql(sql, (q, q)).to_arrow())
    assert used and calls and calls[0] is not None
    assert fast.to_pylist() == slow.to_pylist()
    got = fast.to_pylist()
    assert got[-1] == {"id": 0, "d": None}
    distances = [row["d"] for row in got[:-1]]
    assert None not in distances and distances == sorted(distances)
    assert max(distances) > 1.0  # rows beyond distance 1 come before the zero vector
