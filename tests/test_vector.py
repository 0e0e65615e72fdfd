"""Vector type, pgvector operators and functions, and exact nearest-neighbour search,
each compared with NumPy on random data."""

import numpy as np
import pytest
import sqlglot

from omnilake import errors as E
from omnilake.engine.dialect import Postgres, to_datafusion
from omnilake.engine.rewrites import apply
from omnilake.gpu import kernels

from conftest import rows

DIM = 8


def _numpy_distance(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    x, q = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        return np.linalg.norm(x - q, axis=1)
    if metric == "cosine":
        return 1 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
    if metric == "ip":
        return -(x @ q)
    return np.abs(x - q).sum(axis=1)


OPERATORS = {"l2": "<->", "cosine": "<=>", "ip": "<#>", "l1": "<+>"}
FUNCTIONS = {"l2": "l2_distance", "cosine": "cosine_distance", "l1": "l1_distance"}


def _text(v) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@pytest.fixture
def items(conn, cur):
    """300 random vectors: 200 in two data files, 100 still in the memtable."""
    rng = np.random.default_rng(7)
    data = rng.normal(size=(300, DIM)).astype(np.float32)
    cur.execute(f"CREATE TABLE items (id INT, grp INT, v VECTOR({DIM}))")
    for start, stop in ((0, 100), (100, 200), (200, 300)):
        cur.executemany("INSERT INTO items VALUES (%s, %s, %s)",
                        [(i, i % 10, data[i]) for i in range(start, stop)])
        if stop <= 200:
            conn.flush("items")
    return data


def test_operators_parse_and_print():
    tree = sqlglot.parse_one("SELECT a <#> b, a <+> b, a <-> b, a <=> b FROM t", dialect=Postgres)
    assert tree.sql(dialect=Postgres) == "SELECT a <#> b, a <+> b, a <-> b, a <=> b FROM t"
    assert to_datafusion(tree) == ("SELECT (-INNER_PRODUCT(a, b)), L1_DISTANCE(a, b), "
                                   "ARRAY_DISTANCE(a, b), COSINE_DISTANCE(a, b) FROM t")
    # The function spellings become the same operator nodes (so they plan the same way).
    spelled = apply(sqlglot.parse_one(
        "SELECT l2_distance(a, '[1,2]'), cosine_distance(a, b), l1_distance(a, b) FROM t",
        dialect=Postgres))
    assert spelled.sql(dialect=Postgres) == \
        'SELECT "a" <-> ARRAY[1.0, 2.0], "a" <=> "b", "a" <+> "b" FROM "t"'


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
def test_distance_operators_equal_numpy(items, cur, metric):
    q = np.linspace(-1, 1, DIM).astype(np.float32)
    got = rows(cur, f"SELECT id, v {OPERATORS[metric]} '{_text(q)}' FROM items ORDER BY id")
    expected = _numpy_distance(items, q, metric)
    assert [r[0] for r in got] == list(range(300))
    np.testing.assert_allclose([r[1] for r in got], expected, rtol=1e-5, atol=1e-5)
    if metric in FUNCTIONS:
        by_name = rows(cur, f"SELECT {FUNCTIONS[metric]}(v, '{_text(q)}') FROM items ORDER BY id")
        np.testing.assert_allclose([r[0] for r in by_name], expected, rtol=1e-5, atol=1e-5)


def test_vector_functions_equal_numpy(items, cur):
    q = np.arange(DIM, dtype=np.float32) / 3
    got = rows(cur, f"""SELECT inner_product(v, '{_text(q)}'), cosine_similarity(v, '{_text(q)}'),
                               vector_dims(v), l2_norm(v), normalize_l2(v),
                               v + '{_text(q)}', v - '{_text(q)}', v * v
                        FROM items ORDER BY id""")
    x = items.astype(np.float64)
    np.testing.assert_allclose([r[0] for r in got], x @ q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([r[1] for r in got],
                               (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q)), rtol=1e-5)
    assert {r[2] for r in got} == {DIM}
    np.testing.assert_allclose([r[3] for r in got], np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose([r[4] for r in got], x / np.linalg.norm(x, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r[5] for r in got], items + q, rtol=1e-6)
    np.testing.assert_allclose([r[6] for r in got], items - q, rtol=1e-6)
    np.testing.assert_allclose([r[7] for r in got], items * items, rtol=1e-6)


def test_null_vectors_give_null(cur):
    cur.execute("CREATE TABLE n (id INT, v VECTOR(2))")
    cur.execute("INSERT INTO n VALUES (1, '[3,4]'), (2, NULL)")
    assert rows(cur, "SELECT id, l2_norm(v), v <+> '[0,0]', vector_dims(v) FROM n ORDER BY id") == \
        [(1, 5.0, 7.0, 2), (2, None, None, None)]
    # A NULL vector sorts after every distance, as PostgreSQL's NULLS LAST.
    assert rows(cur, "SELECT id FROM n ORDER BY v <-> '[3,4]' LIMIT 2") == [(1,), (2,)]


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
def test_exact_search_equals_brute_force(items, cur, metric):
    """No index: the search reads every source (two files and the memtable) on the kernel."""
    rng = np.random.default_rng(11)
    for q in rng.normal(size=(5, DIM)).astype(np.float32):
        for k in (1, 10, 50):
            got = rows(cur, f"SELECT id FROM items ORDER BY v {OPERATORS[metric]} '{_text(q)}' LIMIT {k}")
            expected = np.argsort(_numpy_distance(items, q, metric), kind="stable")[:k]
            assert [r[0] for r in got] == expected.tolist()
    plan = rows(cur, f"EXPLAIN SELECT id FROM items ORDER BY v {OPERATORS[metric]} '{_text(q)}' LIMIT 5")
    assert plan[0][1].startswith("VectorSearch:") and f"metric={metric}" in plan[0][1]
    assert "memtable_rows=100" in plan[0][1] and "exact (no index" in plan[0][1]


def test_exact_search_prepares_each_file_once(items, conn, cur):
    """Unfiltered exact searches keep each data file's vectors ready for the kernel (with
    their squared lengths); deleted rows still never come back."""
    rng = np.random.default_rng(3)
    cache = conn._engine.vectors.rows  # noqa: SLF001 - inspecting what is cached

    def prepared():
        return [key for key in list(cache._items) if key[0] == "prepared"]  # noqa: SLF001
    alive = np.ones(300, bool)
    for step in range(2):
        counts = []
        for q in rng.normal(size=(3, DIM)).astype(np.float32):
            got = rows(cur, f"SELECT id FROM items ORDER BY v <-> '{_text(q)}' LIMIT 12")
            d = np.where(alive, _numpy_distance(items, q, "l2"), np.inf)
            assert [r[0] for r in got] == np.argsort(d, kind="stable")[:12].tolist()
            counts.append(len(prepared()))
        assert counts[0] == counts[-1]  # made by the first search, reused by the others
        if step == 0:
            assert counts[0] == 2  # the two data files
            cur.execute("DELETE FROM items WHERE grp = 4")  # rewrites them: new files
            alive[np.arange(300) % 10 == 4] = False


def test_exact_search_with_where_and_projection(items, cur):
    q = np.ones(DIM, np.float32)
    got = rows(cur, f"""SELECT id, grp, v <-> '{_text(q)}' AS d FROM items
                        WHERE grp IN (3, 4) AND id > 20 ORDER BY d LIMIT 7""")
    ids = np.arange(300)
    keep = np.isin(ids % 10, [3, 4]) & (ids > 20)
    d = _numpy_distance(items, q, "l2")
    expected = ids[keep][np.argsort(d[keep], kind="stable")][:7]
    assert [r[0] for r in got] == expected.tolist()
    assert all(r[1] in (3, 4) for r in got)
    np.testing.assert_allclose([r[2] for r in got], d[expected], rtol=1e-5)


def test_search_in_subquery_joined(items, cur):
    cur.execute("CREATE TABLE groups (grp INT, name TEXT)")
    cur.execute("INSERT INTO groups VALUES " + ", ".join(f"({g}, 'g{g}')" for g in range(10)))
    q = np.zeros(DIM, np.float32)
    sql = f"""SELECT s.id, g.name FROM (SELECT id, grp FROM items ORDER BY v <-> '{_text(q)}' LIMIT 4) s
              JOIN groups g ON g.grp = s.grp ORDER BY s.id"""
    expected = np.argsort(_numpy_distance(items, q, "l2"), kind="stable")[:4]
    assert rows(cur, sql) == sorted((int(i), f"g{i % 10}") for i in expected)
    assert any(line.startswith("VectorSearch:") for _, line in rows(cur, "EXPLAIN " + sql))


def test_parameters_as_numpy_and_lists(items, cur):
    q = np.full(DIM, 0.5, np.float32)
    expected = np.argsort(_numpy_distance(items, q, "cosine"), kind="stable")[:3].tolist()
    for param in (q, q.tolist()):
        got = rows(cur, "SELECT id, v FROM items ORDER BY v <=> %s LIMIT 3", (param,))
        assert [r[0] for r in got] == expected
        assert isinstance(got[0][1], list) and len(got[0][1]) == DIM


def test_wrong_dimensions_are_clear_errors(items, cur):
    with pytest.raises(E.DataError) as info:
        cur.execute("INSERT INTO items VALUES (1, 1, '[1,2,3]')")
    assert info.value.sqlstate == "22000" and "dimensions" in str(info.value)
    with pytest.raises(E.DataError) as info:
        cur.execute("SELECT id FROM items ORDER BY v <-> '[1,2,3]' LIMIT 3")
    assert info.value.sqlstate == "22000" and "different vector dimensions 8 and 3" in str(info.value)
    with pytest.raises(E.DataError) as info:
        cur.execute("SELECT l1_distance(v, '[1,2]') FROM items")
    assert "different vector dimensions" in str(info.value) and "Traceback" not in str(info.value)
    with pytest.raises(E.DataError) as info:
        cur.execute("CREATE TABLE bad (v VECTOR(0))")
    assert "dimension" in str(info.value)


def test_nan_and_infinite_elements_are_refused_as_pgvector_refuses_them(items, cur):
    cur.execute("SELECT count(*) FROM items")
    before = cur.fetchall()
    bad = [1.0] * (DIM - 1)
    for value in ("[" + ",".join(["NaN"] + ["1"] * (DIM - 1)) + "]", bad + [float("nan")],
                  np.array(bad + [np.inf], np.float32), "[" + ",".join(["1e39"] * DIM) + "]"):
        with pytest.raises(E.DataError, match="NaN and infinite") as info:
            cur.execute("INSERT INTO items VALUES (1000, 1, %s)", (value,))
        assert info.value.sqlstate == "22000"
    cur.execute("SELECT count(*) FROM items")
    assert cur.fetchall() == before  # nothing written


def test_nan_and_infinite_query_vectors_are_refused(items, cur, conn):
    nan = "[" + ",".join(["NaN"] + ["1"] * (DIM - 1)) + "]"
    bad = [float("nan")] + [1.0] * (DIM - 1)
    for sql, params in [(f"SELECT id FROM items ORDER BY v <-> '{nan}' LIMIT 3", None),
                        (f"SELECT id FROM items ORDER BY v <=> '{nan}'::vector LIMIT 3", None),
                        ("SELECT id FROM items ORDER BY v <-> %s LIMIT 3", (bad,)),
                        ("SELECT id FROM items ORDER BY v <#> %s LIMIT 3",
                         (np.array([np.inf] + [1.0] * (DIM - 1), np.float32),)),
                        (f"SELECT l2_distance(v, '{nan}') FROM items", None),
                        ("SELECT v <+> %s FROM items", (bad,))]:
        with pytest.raises(E.DataError, match="NaN and infinite") as info:
            cur.execute(sql, params)
        assert info.value.sqlstate == "22000", sql
    with pytest.raises(E.DataError, match="NaN and infinite"):
        conn.vector_search("items", np.array([bad]), 3)


def test_l1_kernel_equals_numpy():
    rng = np.random.default_rng(3)
    q, x = rng.normal(size=(4, 5)), rng.normal(size=(500, 5))
    d, i = kernels.topk(q, x, 7, "l1", block_rows=64)
    full = np.abs(q[:, None, :] - x[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(i, np.argsort(full, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(d, np.sort(full, axis=1)[:, :7], rtol=1e-5)


def test_offset_cte_and_fallbacks(items, cur):
    q = np.full(DIM, -0.25, np.float32)
    order = np.argsort(_numpy_distance(items, q, "l2"), kind="stable")
    got = rows(cur, f"SELECT id FROM items ORDER BY v <-> '{_text(q)}' LIMIT 5 OFFSET 3")
    assert [r[0] for r in got] == order[3:8].tolist()
    cte = f"""WITH near AS (SELECT id, grp FROM items ORDER BY v <-> '{_text(q)}' LIMIT 6)
              SELECT count(*) FROM near WHERE grp >= 0"""
    assert rows(cur, cte) == [(6,)]
    assert any(line.startswith("VectorSearch") for _, line in rows(cur, "EXPLAIN " + cte))
    # Not searches (planned as ordinary sorts, same answers): DESC, NULLS FIRST, no LIMIT.
    for sql in (f"SELECT id FROM items ORDER BY v <-> '{_text(q)}' DESC LIMIT 3",
                f"SELECT id FROM items ORDER BY v <-> '{_text(q)}' NULLS FIRST LIMIT 3"):
        assert not any(line.startswith("VectorSearch") for _, line in rows(cur, "EXPLAIN " + sql))
    desc = rows(cur, f"SELECT id FROM items ORDER BY v <-> '{_text(q)}' DESC LIMIT 3")
    assert [r[0] for r in desc] == order[::-1][:3].tolist()


def test_filters_are_evaluated_per_statement(items, conn, cur):
    """Filter results of data files are cached; a function-free filter may be, random() not."""
    q = np.zeros(DIM, np.float32)
    first = rows(cur, f"SELECT id FROM items WHERE grp = 1 ORDER BY v <-> '{_text(q)}' LIMIT 3")
    assert rows(cur, f"SELECT id FROM items WHERE grp = 1 ORDER BY v <-> '{_text(q)}' LIMIT 3") == first
    assert all(i % 10 == 1 for (i,) in first)
    assert rows(cur, f"SELECT id FROM items WHERE grp = 1 AND random() < 0 "
                     f"ORDER BY v <-> '{_text(q)}' LIMIT 3") == []
    assert len(rows(cur, f"SELECT id FROM items WHERE grp = 1 AND random() < 2 "
                         f"ORDER BY v <-> '{_text(q)}' LIMIT 3")) == 3
