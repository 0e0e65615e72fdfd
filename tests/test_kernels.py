"""Distance/top-k and k-means kernels against plain NumPy, on every backend present."""

import numpy as np
import pytest

from omnilake import errors as E
from omnilake.gpu import get_backend, kmeans, pairwise_distances, topk

BACKENDS = ["cpu"] + (["gpu"] if get_backend("auto").is_gpu else [])


def reference(q, x, metric):
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        return np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    if metric == "ip":
        return -(q @ x.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - (q @ x.T) / (np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(x, axis=1)[None, :])


@pytest.fixture(params=BACKENDS)
def backend(request):
    return get_backend(request.param)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("n, d, nq, k, block", [(1000, 16, 5, 10, 97), (37, 3, 1, 5, None),
                                                 (5, 7, 3, 50, None), (1, 1, 2, 1, None),
                                                 (2500, 129, 17, 33, 512)])
def test_topk_matches_numpy(backend, metric, n, d, nq, k, block):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)).astype(np.float32)
    q = rng.normal(size=(nq, d)).astype(np.float32)
    dist, idx = topk(q, x, k, metric, backend=backend, block_rows=block)
    ref = reference(q, x, metric)
    kk = min(k, n)
    assert dist.shape == idx.shape == (nq, kk)
    expected = np.sort(ref, axis=1)[:, :kk]
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-4)
    # The returned rows really are at those distances.
    np.testing.assert_allclose(np.take_along_axis(ref, idx, 1), dist, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pairwise_distances(q, x, metric, backend) if backend.name == "numpy"
                               else backend.to_numpy(pairwise_distances(q, x, metric, backend)),
                               ref, rtol=1e-4, atol=1e-4)


def test_zero_and_nan_vectors_rank_last(backend):
    x = np.array([[0, 0], [1, 0], [np.nan, 1], [0, 2]], dtype=np.float32)
    q = np.array([[1, 0.1]], dtype=np.float32)
    dist, idx = topk(q, x, 4, "cosine", backend=backend)
    assert idx[0].tolist()[:2] == [1, 3]
    assert np.isnan(dist[0, 2:]).all()  # zero vector and NaN vector: cosine undefined
    dist, idx = topk(q, x, 2, "l2", backend=backend)
    assert idx[0].tolist() == [1, 0]
    zero_q = np.zeros((1, 2), np.float32)
    dist, _ = topk(zero_q, x, 1, "cosine", backend=backend)
    assert np.isnan(dist[0, 0])


def test_bad_inputs(backend):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(E.DataError, match="dimensions"):
        topk(np.ones((1, 2), np.float32), x, 1, backend=backend)
    with pytest.raises(E.InvalidParameterValue, match="metric"):
        topk(x, x, 1, "manhattan", backend=backend)
    with pytest.raises(E.InvalidParameterValue):
        topk(x, x, 0, backend=backend)
    with pytest.raises(E.InvalidParameterValue):
        kmeans(x, 5, backend=backend)


def test_kmeans_recovers_separated_clusters(backend):
    rng = np.random.default_rng(3)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    labels = rng.integers(0, 4, 2000)
    data = centers[labels] + rng.normal(0, 0.5, (2000, 2)).astype(np.float32)
    found, assignment = kmeans(data, 4, backend=backend, seed=1)
    def by_position(points):
        rounded = np.round(points)
        return points[np.lexsort((rounded[:, 1], rounded[:, 0]))]
    np.testing.assert_allclose(by_position(found), by_position(centers), atol=0.15)
    # every true cluster maps to exactly one found cluster
    pairs = {(int(t), int(a)) for t, a in zip(labels, assignment)}
    assert len(pairs) == 4


def test_device_setting():
    assert get_backend("cpu").name == "numpy"
    with pytest.raises(E.InvalidParameterValue):
        get_backend("tpu")
    if not get_backend("auto").is_gpu:
        with pytest.raises(E.OperationalError, match="omnilake\\[gpu\\]"):
            get_backend("gpu")


@pytest.mark.parametrize("rows, n, k, group", [(1, 10_000, 10, 256), (7, 5_001, 3, 64),
                                               (3, 2_000, 50, 8), (2, 300, 1, 1)])
def test_group_selection_equals_a_full_sort(rows, n, k, group):
    from omnilake.gpu.kernels import _smallest_by_groups
    rng = np.random.default_rng(n)
    d = rng.normal(size=(rows, n)).astype(np.float32)
    d[0, rng.choice(n, 20, replace=False)] = np.inf  # NaN distances are ranked as +inf
    picked = _smallest_by_groups(d, k, np, group)
    assert picked.shape == (rows, k)
    assert all(len(set(row)) == k for row in picked.tolist()) and picked.max() < n
    np.testing.assert_array_equal(np.sort(np.take_along_axis(d, picked, axis=1), axis=1),
                                  np.sort(d, axis=1)[:, :k])


def test_group_selection_declines_a_tie_at_the_boundary():
    from omnilake.gpu.kernels import _smallest_by_groups
    d = np.arange(4096, dtype=np.float32).reshape(1, -1)
    assert _smallest_by_groups(d, 2, np, 256) is not None
    d[0, 256 * 5] = 256.0  # a later group's minimum equals the 2nd smallest group minimum
    assert _smallest_by_groups(d, 2, np, 256) is None
    assert _smallest_by_groups(np.full((2, 4096), np.inf, np.float32), 3, np, 256) is None


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_topk_over_many_rows_with_duplicates(backend, metric):
    # Enough rows for the GPU's group selection; duplicated rows give exact ties.
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60_000, 8)).astype(np.float32)
    x[30_000:30_050] = x[:50]
    q = np.vstack([x[:3], rng.normal(size=(10, 8)).astype(np.float32)])  # 13: GPU groups
    dist, idx = topk(q, x, 20, metric, backend=backend)
    ref = reference(q, x, metric)
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), ref.shape), ref), axis=1)[:, :20]
    np.testing.assert_allclose(dist, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(ref, idx, 1), dist, rtol=1e-4, atol=1e-4)
    if metric != "ip":  # the query's own row and its duplicate: a tie, ordered by row index
        assert idx[0, :2].tolist() == [0, 30_000]


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip", "l1"])
@pytest.mark.parametrize("block", [None, 700])
def test_prepared_vectors_give_the_same_answer(backend, metric, block):
    from omnilake.gpu import Prepared
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 24)).astype(np.float32)
    x[17] = np.nan
    q = rng.normal(size=(6, 24)).astype(np.float32)
    prepared = Prepared(x, backend)
    assert prepared.shape == (3000, 24)
    for _ in range(2):  # the prepared vectors are reused, not consumed
        dist, idx = topk(q, prepared, 15, metric, block_rows=block)
        plain_d, plain_i = topk(q, x, 15, metric, backend=backend, block_rows=block)
        np.testing.assert_array_equal(idx, plain_i)
        np.testing.assert_allclose(dist, plain_d, rtol=1e-5, atol=1e-5)


def test_prepared_vectors_bad_inputs(backend):
    from omnilake.gpu import Prepared
    with pytest.raises(E.DataError, match="2-D"):
        Prepared(np.ones(4, np.float32), backend)
    prepared = Prepared(np.ones((4, 3), np.float32), backend)
    with pytest.raises(E.DataError, match="dimensions"):
        topk(np.ones((1, 2), np.float32), prepared, 1)
    other = get_backend("gpu" if backend.name == "numpy" and get_backend("auto").is_gpu else "cpu")
    if other is not backend:
        with pytest.raises(E.InvalidParameterValue, match="prepared for"):
            topk(np.ones((1, 3), np.float32), prepared, 1, backend=other)


def test_prepared_vectors_outlive_the_backend_cache():
    from omnilake.gpu import Prepared
    prepared = Prepared(np.eye(4, dtype=np.float32), get_backend("cpu"))
    get_backend.cache_clear()  # a new but equal backend object
    _, idx = topk(np.eye(4, dtype=np.float32)[:1], prepared, 1, backend=get_backend("cpu"))
    assert idx.tolist() == [[0]]


def test_spherical_kmeans_gives_unit_centroids_of_the_directions(backend):
    rng = np.random.default_rng(5)
    directions = np.eye(3, dtype=np.float32)
    labels = rng.integers(0, 3, 900)
    scale = rng.uniform(0.5, 20, (900, 1)).astype(np.float32)  # lengths vary, directions not
    data = (directions[labels] + rng.normal(0, 0.05, (900, 3)).astype(np.float32)) * scale
    found, assignment = kmeans(data, 3, backend=backend, seed=2, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.sort(np.abs(found).max(axis=1)), [1, 1, 1], atol=0.01)
    assert len({(int(t), int(a)) for t, a in zip(labels, assignment)}) == 3
