"""Approximate nearest-neighbour indexes built with faiss: HNSW and IVF-flat.

Knows vectors, ids and metrics, nothing of SQL or tables. An index maps int64 ids (the
caller's row numbers) to vectors; `search` returns distances in the same conventions as
`kernels.topk` (smaller is nearer): l2 = Euclidean distance, cosine = 1 - cosine similarity,
ip = negative inner product, l1 = taxicab distance. Missing results (fewer matches than k)
have id -1.

Inner product is not a metric and graph search for it is weaker: on 3000 clustered 16-d
vectors (tests/test_vector_index.py) HNSW with m=32, ef_construction=128 reached recall@10
0.92 at ef_search 100 and 0.98 at 400, where L2 reached 1.0 at 64 (with m=16,
ef_construction=64: 0.89 and 0.92 for inner product, 0.975 at 100 for L2). The usual
reduction to Euclidean search (one extra coordinate sqrt(M^2 - |x|^2)) was tried (with m=16)
and did worse there (0.835 at 100), so `ip` uses
faiss's inner-product HNSW as it is; IVF-flat does not have this weakness.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field

import numpy as np

from omnilake.errors import InvalidParameterValue, NotSupportedError

METHODS = ("hnsw", "ivfflat")
METRICS = ("l2", "cosine", "ip", "l1")
SMALL_BATCH = 16  # searches of fewer queries run on the calling thread alone


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # a dependency, but say what is missing if it is not there
        raise NotSupportedError("vector indexes need faiss: pip install faiss-cpu") from exc
    return faiss


def _metric_type(metric: str):
    faiss = _faiss()
    return {"l2": faiss.METRIC_L2, "cosine": faiss.METRIC_INNER_PRODUCT,
            "ip": faiss.METRIC_INNER_PRODUCT, "l1": faiss.METRIC_L1}[metric]


def _prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return x


@dataclass
class AnnIndex:
    """A faiss index over (id, vector) pairs, with its method and metric."""

    index: object
    method: str
    metric: str
    count: int
    # search parameters without a filter, per breadth: made once (read only while searching)
    _params: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def lists(self) -> int:
        """IVF lists (0 for HNSW)."""
        return _faiss().extract_index_ivf(self.index).nlist if self.method == "ivfflat" else 0

    def search(self, queries: np.ndarray, k: int, breadth: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), each (n_queries, k). `breadth` is ef_search (HNSW) or probes
        (IVF). `allowed`, a boolean array indexed by id, keeps the others out of the results
        (faiss filters while it searches, so k allowed ids come back where it finds them)."""
        faiss = _faiss()
        q = _prepare(np.atleast_2d(queries), self.metric)
        if allowed is not None:
            packed = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(packed))
            params = self._parameters(breadth, k, selector)
        else:
            key = max(breadth, k) if self.method == "hnsw" else breadth
            params = self._params.get(key)
            if params is None:
                params = self._params[key] = self._parameters(breadth, k, None)
        threads = faiss.omp_get_max_threads()
        if len(q) < SMALL_BATCH:
            # One query is one thread's work; a parallel region would still wait for every
            # OpenMP thread, which on busy cores took milliseconds (measured 3.8 ms against
            # 0.15 ms alone). The setting is the calling thread's own.
            faiss.omp_set_num_threads(1)
        try:
            distances, ids = self.index.search(q, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        if allowed is not None:
            del packed, selector  # they must outlive the search (faiss keeps raw pointers)
        return _to_distances(distances, self.metric), ids

    def _parameters(self, breadth: int, k: int, selector):
        faiss = _faiss()
        if self.method == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(breadth, k), sel=selector)
        return faiss.SearchParametersIVF(nprobe=breadth, sel=selector)


def _to_distances(raw: np.ndarray, metric: str) -> np.ndarray:
    if metric == "l2":
        return np.sqrt(np.maximum(raw, 0.0))
    if metric == "cosine":
        return 1.0 - raw
    if metric == "ip":
        return -raw
    return raw


def build(vectors: np.ndarray, ids: np.ndarray, method: str, metric: str,
          options: dict[str, int], backend=None) -> AnnIndex:
    """Build an index of `vectors` (n x d, float32) under `ids` (n int64). With a GPU
    `backend` (gpu/backend.py), IVF's lists are trained by the k-means kernel there; faiss
    (CPU) trains them otherwise, and always assigns the rows and builds HNSW graphs."""
    faiss = _faiss()
    if method not in METHODS:
        raise InvalidParameterValue(f"unknown index method {method!r}")
    if metric not in METRICS:
        raise InvalidParameterValue(f"unknown metric {metric!r}")
    x = _prepare(vectors, metric)
    n, d = x.shape
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if method == "hnsw":
        inner = faiss.IndexHNSWFlat(d, int(options["m"]), _metric_type(metric))
        inner.hnsw.efConstruction = int(options["ef_construction"])
        index = faiss.IndexIDMap2(inner)
        index.add_with_ids(x, ids)
    else:
        if metric == "l1":
            raise NotSupportedError("ivfflat does not support L1 distance; use hnsw")
        # A segment holds one data file's rows, often far fewer than the table: more lists
        # than sqrt(rows) leaves lists of a few rows each and probes that see too little.
        # No `lists` (the default) means sqrt(rows).
        wanted = options.get("lists")
        lists = max(1, min(int(wanted) if wanted else n, int(np.sqrt(n))))
        quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, lists, _metric_type(metric))
        index.own_fields = True
        quantizer.this.disown()
        sample = x if n <= lists * 256 else x[np.random.default_rng(0).choice(n, lists * 256, replace=False)]
        if backend is not None and backend.is_gpu:
            _train_on_device(index, quantizer, sample, lists, metric, backend)
        else:
            index.train(sample)
        index.add_with_ids(x, ids)
    return AnnIndex(index, method, metric, n)


def _train_on_device(index, quantizer, sample: np.ndarray, lists: int, metric: str,
                     backend) -> None:
    """IVF training as faiss does it, on the device: k-means of the sample (spherical for the
    inner-product metrics, as faiss's IVF clusters them), whose centroids become the
    quantizer's vectors. faiss's own training is the CPU's most expensive step of an IVF
    build (k-means over up to 256 rows per list)."""
    from omnilake.gpu import kernels
    centroids, _ = kernels.kmeans(sample, lists, backend=backend,
                                  spherical=metric in ("cosine", "ip"))
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    index.is_trained = True


HUGE_PAGE = 1 << 21
HUGE_PAGES_FROM = 32 << 20  # smaller graphs mostly stay in the caches and the TLB's reach
_MADV_COLLAPSE = 25  # Linux 6.1 and later


def use_huge_pages(index: AnnIndex, minimum: int = HUGE_PAGES_FROM) -> int:
    """Back an HNSW graph's vectors and links with 2 MiB pages where the kernel can
    (MADV_COLLAPSE); the bytes now on them (0 elsewhere: other platforms, older kernels,
    IVF, buffers under `minimum` bytes). A search jumps between random nodes, and on 4 KiB
    pages most jumps also miss the TLB: on a 1M x 128 segment (755 MiB) faiss's p50 went
    from 0.74 to 0.60 ms at ef_search 143 (three runs each); collapsing took 1.3 s, once
    per load. Best effort: the memory stays as it was wherever the kernel declines."""
    madvise = _madvise()
    if madvise is None:
        return 0
    faiss = _faiss()
    inner = faiss.downcast_index(getattr(index.index, "index", index.index))
    if not isinstance(inner, faiss.IndexHNSW):
        return 0
    done = 0
    storage = faiss.downcast_index(inner.storage)
    for vector in (getattr(storage, "codes", None), inner.hnsw.neighbors, inner.hnsw.offsets):
        try:
            values = faiss.rev_swig_ptr(vector.data(), vector.size())  # a view, no copy
        except Exception:  # noqa: BLE001 - a faiss build without these accessors: skip
            continue
        if values.nbytes < minimum:
            continue
        address = values.ctypes.data
        start = -(-address // HUGE_PAGE) * HUGE_PAGE  # whole huge pages inside the buffer
        end = (address + values.nbytes) // HUGE_PAGE * HUGE_PAGE
        if end > start and madvise(start, end - start, _MADV_COLLAPSE) == 0:
            done += end - start
    return done


@functools.lru_cache(maxsize=1)
def _madvise():
    """libc's madvise, on Linux; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util
    try:
        call = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    call.restype = ctypes.c_int
    return call  # (ctypes lets go of the GIL while the kernel works)


def serialize(index: AnnIndex) -> bytes:
    return _faiss().serialize_index(index.index).tobytes()


def deserialize(data: bytes, method: str, metric: str) -> AnnIndex:
    faiss = _faiss()
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    return AnnIndex(index, method, metric, int(index.ntotal))
