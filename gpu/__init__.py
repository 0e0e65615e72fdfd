"""GPU compute with a NumPy fallback: the array backend, distance/top-k and k-means kernels,
and the built-in text encoder. Nothing here knows SQL."""

from omnilake.gpu.backend import Backend, get_backend
from omnilake.gpu.kernels import Prepared, kmeans, pairwise_distances, topk

__all__ = ["Backend", "Prepared", "get_backend", "kmeans", "pairwise_distances", "topk"]
