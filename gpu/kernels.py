"""Distance, top-k and k-means kernels, written once for NumPy and CuPy.

Distances use the matrix-multiply form (||q||^2 + ||x||^2 - 2 q.x for L2) so the heavy part is
one GEMM per block. Base vectors are processed in blocks sized to the backend's memory budget,
and each block's candidates are merged into a running top-k, so memory stays bounded for any
table size.

Conventions (smaller is nearer, as in pgvector):
  l2      Euclidean distance                  (`<->`)
  cosine  1 - cosine similarity               (`<=>`); NaN when either vector is all zeros
  ip      negative inner product              (`<#>`)
  l1      taxicab distance                    (`<+>`); no GEMM form, computed per block
Distances that are NaN (a NaN element, a zero vector under cosine) rank after every number.
"""

from __future__ import annotations

import numpy as np

from omnilake.errors import DataError, InvalidParameterValue
from omnilake.gpu.backend import Backend, get_backend

METRICS = ("l2", "cosine", "ip", "l1")


def _check(queries, base, metric: str):
    if metric not in METRICS:
        raise InvalidParameterValue(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if queries.ndim != 2 or base.ndim != 2:
        raise DataError("queries and vectors must be 2-D arrays (rows x dimensions)")
    if queries.shape[1] != base.shape[1]:
        raise DataError(f"different vector dimensions {queries.shape[1]} and {base.shape[1]}")


def pairwise_distances(queries, base, metric: str = "l2", backend: Backend | None = None):
    """Full (n_queries, n_base) distance matrix; for small inputs and for tests."""
    backend = backend or get_backend()
    xp = backend.xp
    q = backend.asarray(queries)
    x = backend.asarray(base)
    _check(q, x, metric)
    if metric == "l2":
        squared = _squared_l2(q, x, xp)
        xp.maximum(squared, 0.0, out=squared)
        return xp.sqrt(squared, out=squared)
    if metric == "l1":
        return xp.abs(q[:, None, :] - x[None, :, :]).sum(axis=2)
    dots = q @ x.T
    if metric == "ip":
        return -dots
    with np.errstate(divide="ignore", invalid="ignore"):
        norms = xp.linalg.norm(q, axis=1)[:, None] * xp.linalg.norm(x, axis=1)[None, :]
        cosine = dots / norms
    cosine = xp.where(norms == 0, xp.nan, cosine)
    return 1.0 - xp.clip(cosine, -1.0, 1.0)


def _squared_l2(q, x, xp, x_norms=None):
    # In place on the (queries x rows) matrix: it is the only large temporary. Rounding can
    # leave tiny negative values; callers clip them.
    dots = q @ x.T
    dots *= -2.0
    dots += xp.einsum("ij,ij->i", q, q)[:, None]
    dots += (_row_norms(x, xp) if x_norms is None else x_norms)[None, :]
    return dots


def _row_norms(x, xp):
    """Squared length of every row."""
    return xp.einsum("ij,ij->i", x, x)


def _scores(q, x, metric: str, backend: Backend, x_norms=None):
    """Scores that rank rows as the distances do: squared L2 for l2 (the square root is taken
    for the k rows kept only), the distance itself for the other metrics."""
    if metric == "l2":
        return _squared_l2(q, x, backend.xp, x_norms)
    return pairwise_distances(q, x, metric, backend)


class Prepared:
    """Base vectors moved to the backend once, with their squared lengths: searches of the
    same vectors pass this to `topk` instead of the array, and skip the copy and one full
    read of the vectors (on a GPU, most of a single query's time)."""

    def __init__(self, base, backend: Backend | None = None):
        self.backend = backend or get_backend()
        self.data = self.backend.asarray(base)
        if self.data.ndim != 2:
            raise DataError("queries and vectors must be 2-D arrays (rows x dimensions)")
        self.squared_norms = _row_norms(self.data, self.backend.xp)

    @property
    def shape(self):
        return self.data.shape


def topk(queries, base, k: int, metric: str = "l2", backend: Backend | None = None,
         block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest base rows for every query: (distances, row indices), NumPy arrays of
    shape (n_queries, min(k, n_base)), nearest first."""
    norms = None
    if isinstance(base, Prepared):
        backend = backend or base.backend
        if backend != base.backend:  # (equal, not identical: get_backend's cache may be new)
            raise InvalidParameterValue(f"vectors prepared for {base.backend.name} searched on "
                                        f"{backend.name}")
        base, norms = base.data, base.squared_norms
    backend = backend or get_backend()
    xp = backend.xp
    q = backend.asarray(queries)
    x = backend.asarray(base)
    _check(q, x, metric)
    if k < 1:
        raise InvalidParameterValue(f"k must be at least 1, not {k}")
    n_queries, n_base = q.shape[0], x.shape[0]
    k = min(k, n_base)
    if n_queries == 0 or k == 0:
        return np.empty((n_queries, 0), np.float32), np.empty((n_queries, 0), np.int64)
    if block_rows is None:
        per_row = 4 * (n_queries + x.shape[1]) * 3
        if metric == "l1":  # the (queries x rows x dimensions) difference is the temporary
            per_row = 4 * n_queries * x.shape[1] * 2
        block_rows = backend.rows_per_batch(per_row, minimum=max(k, 1024))
    best_d = best_i = None
    for start in range(0, n_base, block_rows):
        block = x[start:start + block_rows]
        block_norms = None if norms is None else norms[start:start + block_rows]
        d = _scores(q, block, metric, backend, block_norms).astype(xp.float32, copy=False)
        xp.copyto(d, xp.float32(xp.inf), where=xp.isnan(d))  # NaN ranks last; reported below
        # The block's own k best, then a merge with the running k best (2k columns).
        part = _smallest(d, min(k, d.shape[1]), backend)
        found_d, found_i = xp.take_along_axis(d, part, axis=1), part.astype(xp.int64) + start
        if start == 0:
            best_d, best_i = found_d, found_i
            continue
        cand_d = xp.concatenate([best_d, found_d], axis=1)
        cand_i = xp.concatenate([best_i, found_i], axis=1)
        keep = min(k, cand_d.shape[1])
        if keep < cand_d.shape[1]:
            top = xp.argpartition(cand_d, keep - 1, axis=1)[:, :keep]
            cand_d = xp.take_along_axis(cand_d, top, axis=1)
            cand_i = xp.take_along_axis(cand_i, top, axis=1)
        best_d, best_i = cand_d, cand_i
    if metric == "l2":  # squared distances until here
        xp.maximum(best_d, 0.0, out=best_d)
        xp.sqrt(best_d, out=best_d)
    # Order each row nearest first; ties by row index so results are deterministic.
    for key in ("index", "distance"):  # a stable sort by distance after one by index
        order = _stable_argsort(best_i if key == "index" else best_d, backend)
        best_d = xp.take_along_axis(best_d, order, axis=1)
        best_i = xp.take_along_axis(best_i, order, axis=1)
    # Report NaN distances as NaN again (they were ranked as +inf).
    true_d = _gather_true(q, x, best_i, best_d, metric, backend)
    return backend.to_numpy(true_d), backend.to_numpy(best_i)


# Rows per group in the GPU selection: the k groups with the smallest minima hold the k
# smallest values, so only k * SELECT_GROUP values are sorted instead of the whole row.
SELECT_GROUP = 256
# Below this many queries CuPy's sort of whole rows costs less than the group selection's
# extra launches. H200, rows of 1M, k=10: 8 rows 0.72 ms sorted, 0.82 ms by groups; 16 rows
# 1.25 and 0.87 ms; 100 rows 6.9 and 1.5 ms.
GROUP_SELECT_MIN_QUERIES = 12


def _smallest(d, k: int, backend: Backend):
    """Column indices of the k smallest values of each row of `d`, in no particular order."""
    xp = backend.xp
    if k >= d.shape[1]:
        return xp.broadcast_to(xp.arange(d.shape[1]), d.shape)
    # NumPy's argpartition selects in linear time; CuPy's sorts the whole row.
    if (backend.is_gpu and d.shape[0] >= GROUP_SELECT_MIN_QUERIES
            and d.shape[1] >= 4 * k * SELECT_GROUP):
        found = _smallest_by_groups(d, k, xp)
        if found is not None:
            return found
    return xp.argpartition(d, k - 1, axis=1)[:, :k]


def _smallest_by_groups(d, k: int, xp, group: int = SELECT_GROUP):
    """`_smallest` that sorts only the k groups of `group` columns with the smallest minima.

    Exact: every value up to the k-th smallest lies in a group whose minimum is at most the
    k-th smallest group minimum t, so when no other group's minimum equals t, those k groups
    hold them all. A row with such a tie makes this return None (the caller sorts whole rows).
    Needs at least k + 1 groups."""
    rows, n = d.shape
    groups = -(-n // group)
    if n % group:  # padding of +inf never ranks before a real value
        d = xp.concatenate([d, xp.full((rows, groups * group - n), xp.inf, d.dtype)], axis=1)
    grid = d.reshape(rows, groups, group)
    minima = grid.min(axis=2)
    order = xp.argsort(minima, axis=1)
    kth = xp.take_along_axis(minima, order[:, k - 1:k], axis=1)
    following = xp.take_along_axis(minima, order[:, k:k + 1], axis=1)
    if bool((following == kth).any()):
        return None
    chosen = order[:, :k]
    candidates = xp.take_along_axis(grid, chosen[:, :, None], axis=1).reshape(rows, k * group)
    picked = xp.argsort(candidates, axis=1)[:, :k]
    return xp.take_along_axis(chosen, picked // group, axis=1) * group + picked % group


def _stable_argsort(keys, backend: Backend):
    if backend.is_gpu:
        return backend.xp.argsort(keys, axis=1)  # CuPy's sort is a stable radix sort
    return np.argsort(keys, axis=1, kind="stable")


def _gather_true(q, x, best_i, best_d, metric, backend):
    xp = backend.xp
    if not bool(xp.isinf(best_d).any()):
        return best_d
    rows = xp.nonzero(xp.isinf(best_d).any(axis=1))[0]
    for r in backend.to_numpy(rows).tolist():
        exact = pairwise_distances(q[r:r + 1], x[best_i[r]], metric, backend)[0]
        best_d[r] = exact.astype(xp.float32)
    return best_d


def kmeans(data, k: int, iterations: int = 20, seed: int = 0, backend: Backend | None = None,
           tolerance: float = 1e-4, spherical: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: (centroids (k, d), assignment per row).
    `spherical`: centroids are scaled to unit length after each step, so the nearest one by
    Euclidean distance is also the one of largest inner product (faiss's clustering for
    inner-product IVF lists)."""
    backend = backend or get_backend()
    xp = backend.xp
    x = backend.asarray(data)
    n = x.shape[0]
    if x.ndim != 2 or n == 0:
        raise DataError("k-means needs a non-empty 2-D array")
    if not 1 <= k <= n:
        raise InvalidParameterValue(f"k must be between 1 and the number of rows ({n}), not {k}")
    rng = np.random.default_rng(seed)
    centroids = _plus_plus(x, k, rng, backend)
    assignment = None
    # Per-cluster sums as one weighted bincount per dimension, on the same code for both
    # array libraries: np.add.at is unbuffered (200k x 128 into 447 clusters: 0.45 s against
    # 0.14 s), and the rows transposed once make each dimension contiguous.
    columns = xp.ascontiguousarray(x.T)
    for _ in range(iterations):
        _, nearest = topk(x, centroids, 1, "l2", backend)
        assignment = nearest[:, 0]
        labels = backend.asarray(assignment, dtype=np.int64)
        sums = xp.stack([xp.bincount(labels, weights=columns[j], minlength=k)
                         for j in range(columns.shape[0])], axis=1)
        counts = xp.bincount(labels, minlength=k).astype(xp.float32)
        empty = counts == 0
        new = (sums / xp.maximum(counts, 1)[:, None]).astype(xp.float32)
        if bool(empty.any()):  # re-seed empty clusters with random rows
            picks = backend.asarray(rng.choice(n, int(empty.sum()), replace=False), dtype=np.int64)
            new[empty] = x[picks]
        if spherical:
            norms = xp.linalg.norm(new, axis=1)[:, None]
            new = xp.where(norms > 0, new / xp.maximum(norms, 1e-30), new)
        shift = float(xp.abs(new - centroids).max())
        centroids = new
        if shift < tolerance:
            break
    _, nearest = topk(x, centroids, 1, "l2", backend)
    return backend.to_numpy(centroids), nearest[:, 0]


def _plus_plus(x, k: int, rng: np.random.Generator, backend: Backend):
    """k-means++ seeding on a sample of at most 20k rows (enough for good seeds)."""
    xp = backend.xp
    n = x.shape[0]
    sample = x if n <= 20_000 else x[backend.asarray(rng.choice(n, 20_000, replace=False), dtype=np.int64)]
    m = sample.shape[0]
    chosen = [int(rng.integers(m))]
    closest = pairwise_distances(sample, sample[chosen[0]:chosen[0] + 1], "l2", backend)[:, 0] ** 2
    for _ in range(1, k):
        weights = backend.to_numpy(closest).astype(np.float64)
        total = weights.sum()
        pick = int(rng.choice(m, p=weights / total)) if total > 0 else int(rng.integers(m))
        chosen.append(pick)
        d = pairwise_distances(sample, sample[pick:pick + 1], "l2", backend)[:, 0] ** 2
        closest = xp.minimum(closest, d)
    return sample[backend.asarray(chosen, dtype=np.int64)].copy()
