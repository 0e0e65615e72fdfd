"""The GPU path on CI: the engine's vector search and the kernels with a stand-in device
library that, like CuPy, never lets a device array pass for a NumPy one (device_arrays.py).
Each answer must equal the NumPy backend's."""

import numpy as np
import pyarrow as pa
import pytest

import omnilake
from omnilake.gpu import backend as backends
from omnilake.gpu import get_backend, kernels

import device_arrays
from test_vector_index import file_reads_over_four_exact_searches

DIM = 12


@pytest.fixture
def strict_device(monkeypatch):
    xp = device_arrays.module()
    monkeypatch.setattr(backends, "_cupy_with_device", lambda: xp)
    get_backend.cache_clear()
    yield get_backend("gpu")
    get_backend.cache_clear()


def test_the_stand_in_refuses_what_cupy_refuses(strict_device):
    xp = strict_device.xp
    on_device = xp.asarray(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(on_device)
    with pytest.raises(TypeError, match="Unsupported type"):
        xp.concatenate([on_device, np.ones((2, 3), np.float32)])
    with pytest.raises(TypeError):
        np.concatenate([np.ones((2, 3), np.float32), on_device])
    assert strict_device.is_gpu and isinstance(strict_device.to_numpy(on_device), np.ndarray)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
def test_kernels_answer_as_on_numpy(strict_device, metric):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40_000, 8)).astype(np.float32)
    x[7] = np.nan
    x[9] = 0
    for n_queries in (1, 13):  # 13: the group selection
        q = rng.normal(size=(n_queries, 8)).astype(np.float32)
        expected = kernels.topk(q, x, 10, metric, backend=get_backend("cpu"))
        for base in (x, kernels.Prepared(x, strict_device)):
            found = kernels.topk(q, base, 10, metric, backend=strict_device)
            assert all(isinstance(a, np.ndarray) for a in found)
            np.testing.assert_array_equal(found[1], expected[1])
            np.testing.assert_allclose(found[0], expected[0], rtol=1e-5, atol=1e-5)
        distances = kernels.pairwise_distances(q, x[:50], metric, strict_device)
        assert isinstance(distances, device_arrays.DeviceArray)  # a device array: callers .get()


def _searches(conn):
    rng = np.random.default_rng(8)
    cur = conn.cursor()
    out = []
    for q in rng.normal(size=(4, DIM)).astype(np.float32):
        cur.execute("SELECT id, v <-> %s AS d FROM items ORDER BY d LIMIT 7", (q,))
        out.append(cur.fetchall())
        cur.execute("SELECT id FROM items WHERE grp = 3 ORDER BY v <=> %s LIMIT 5", (q,))
        out.append(cur.fetchall())
    batch = conn.vector_search("items", rng.normal(size=(3, DIM)).astype(np.float32), 6)
    out.append(batch.select(["query", "id"]).to_pylist())
    return out


def test_kmeans_answers_as_on_numpy(strict_device):
    rng = np.random.default_rng(4)
    data = (rng.normal(size=(8, DIM)) * 5)[rng.integers(0, 8, 600)] + rng.normal(size=(600, DIM))
    data = data.astype(np.float32)
    on_numpy = kernels.kmeans(data, 8, seed=2, backend=get_backend("cpu"))
    on_device = kernels.kmeans(data, 8, seed=2, backend=strict_device)
    np.testing.assert_allclose(on_device[0], on_numpy[0], rtol=1e-5, atol=1e-5)
    assert isinstance(on_device[0], np.ndarray) and isinstance(on_device[1], np.ndarray)
    np.testing.assert_array_equal(on_device[1], on_numpy[1])


@pytest.mark.parametrize("opclass,metric", [("vector_l2_ops", "l2"), ("vector_cosine_ops", "cosine")])
def test_ivf_lists_are_trained_on_the_device(strict_device, warehouse, monkeypatch, opclass, metric):
    import faiss

    from omnilake.catalog.indexes import read_indexes
    from omnilake.engine.tables import load
    trained = []
    original = kernels.kmeans

    def spy(data, k, *args, backend=None, **kwargs):
        trained.append((k, backend, original(data, k, *args, backend=backend, **kwargs)[0]))
        return trained[-1][2], None

    monkeypatch.setattr(kernels, "kmeans", spy)
    rng = np.random.default_rng(6)
    data = ((rng.normal(size=(20, DIM)) * 4)[rng.integers(0, 20, 2000)]
            + rng.normal(size=(2000, DIM))).astype(np.float32)
    with omnilake.connect(warehouse) as conn:  # device=auto: the stand-in
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE items (id BIGINT, v VECTOR({DIM}))")
        conn.insert("items", pa.table({
            "id": pa.array(np.arange(2000), pa.int64()),
            "v": pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), DIM)}))
        conn.flush("items")
        cur.execute(f"CREATE INDEX items_v ON items USING ivfflat (v {opclass}) WITH (lists = 20)")
        assert [(k, backend.is_gpu) for k, backend, _ in trained] == [(20, True)]
        # the lists are the device's centroids
        ref = load(conn.session.engine, "public", "items")
        index = read_indexes(ref.table.properties)["items_v"]
        (location,) = index.segments.values()
        ivf = faiss.extract_index_ivf(conn.session.engine.vectors.segment(ref, index, location).index)
        centroids = ivf.quantizer.reconstruct_n(0, 20)
        np.testing.assert_array_equal(centroids, trained[0][2])
        if metric == "cosine":  # spherical k-means, as faiss clusters inner-product lists
            np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, rtol=1e-5)
        sizes = [ivf.invlists.list_size(i) for i in range(20)]
        assert sum(sizes) == 2000 and max(sizes) < 400  # 20 clusters of ~100 rows: no list takes most
        operator = "<->" if metric == "l2" else "<=>"
        queries = rng.normal(size=(5, DIM)).astype(np.float32)
        _, expected = kernels.topk(queries, data, 10, metric, get_backend("cpu"))
        cur.execute("SET ivfflat.probes = 20")  # every list: the exact answer
        for q, want in zip(queries, expected):
            cur.execute(f"SELECT id FROM items ORDER BY v {operator} %s LIMIT 10", (q,))
            assert [r[0] for r in cur.fetchall()] == want.tolist()


@pytest.mark.parametrize("index", [None, "hnsw (v vector_l2_ops)", "hnsw (v vector_cosine_ops)",
                                   "ivfflat (v vector_l2_ops)"])
def test_engine_searches_answer_as_on_numpy(strict_device, warehouse, index):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(3000, DIM)).astype(np.float32)
    with omnilake.connect(warehouse, device="cpu") as conn:
        conn.cursor().execute(f"CREATE TABLE items (id BIGINT, grp INT, v VECTOR({DIM}))")
        for start in (0, 1500):  # two data files
            conn.insert("items", pa.table({
                "id": pa.array(np.arange(start, start + 1500), pa.int64()),
                "grp": pa.array(np.arange(start, start + 1500) % 10, pa.int32()),
                "v": pa.FixedSizeListArray.from_arrays(pa.array(data[start:start + 1500].ravel()),
                                                       DIM)}))
            conn.flush("items")
        conn.cursor().execute("INSERT INTO items VALUES (5000, 3, %s)", (data[0],))  # memtable
        if index:
            conn.cursor().execute(f"CREATE INDEX ON items USING {index}")
        expected = _searches(conn)
    with omnilake.connect(warehouse) as conn:  # device=auto: the stand-in
        assert conn._engine.settings.device == "auto" and get_backend("auto").is_gpu  # noqa: SLF001
        found = _searches(conn)
    assert found == expected


def test_embed_in_sql_answers_as_on_numpy(strict_device, warehouse):
    from omnilake.gpu.models import fetch
    fetch("minilm")
    texts = ["pump 7 overheated", "", "Die Pumpe ist überhitzt", None]
    answers = []
    for device in ("cpu", "auto"):
        with omnilake.connect(warehouse, device=device) as conn:
            cur = conn.cursor()
            if device == "cpu":
                cur.execute("CREATE TABLE notes (id INT, body TEXT)")
                cur.executemany("INSERT INTO notes VALUES (%s, %s)", list(enumerate(texts)))
            cur.execute("SELECT id, embed(body) FROM notes ORDER BY id")
            answers.append(cur.fetchall())
    (cpu, device) = answers
    assert [r[0] for r in device] == [0, 1, 2, 3] and device[3][1] is None
    for a, b in zip(cpu[:3], device[:3]):
        np.testing.assert_allclose(np.asarray(b[1]), np.asarray(a[1]), atol=1e-5)


def test_device_copies_do_not_push_their_rows_out_of_the_cache(strict_device, tmp_path, monkeypatch):
    """A file that fills half the rows cache: its copy on the device is kept under a budget of
    its own, so exact searches read the file once (on the H100, counted with the rows, the
    copy pushed them out and every search read the file again)."""
    assert file_reads_over_four_exact_searches(tmp_path, monkeypatch) == 1
