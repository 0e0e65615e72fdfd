"""pgvector's functions that DataFusion lacks, as scalar UDFs vectorized over Arrow arrays.

DataFusion has `array_distance` (`<->`), `cosine_distance` (`<=>`) and `inner_product`
(`<#>` is its negation). The rest are here: `l1_distance` (`<+>`), `cosine_similarity`,
`vector_dims`, `l2_norm`, `normalize_l2`, and `vector_add` / `vector_sub` / `vector_mul`, the
element-wise `+ - *` of two vectors (see `elementwise_operators`). Each works on a whole
batch as one NumPy matrix: no per-row Python. A NULL vector gives NULL.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datafusion import SessionContext, udf
from sqlglot import exp

VECTOR_ARG = pa.list_(pa.float32())


def as_matrix(array: pa.Array | pa.ChunkedArray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(rows x dimensions matrix, validity) of a list array; NULL rows are NaN rows."""
    if isinstance(array, pa.ChunkedArray):
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    n = len(array)
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.any():
        return np.full((n, 0), np.nan, dtype), valid
    if pa.types.is_fixed_size_list(array.type):
        dims = {array.type.list_size}
    else:
        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        dims = set(np.unique(lengths[valid]).tolist())
    if len(dims) != 1:
        raise ValueError(f"different vector dimensions {sorted(dims)} in one column")
    d = int(dims.pop())
    if valid.all():  # no NULL: the values buffer is the matrix (no copy for float32)
        flat = array.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype).reshape(n, d), valid
    flat = array.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
    matrix = np.full((n, d), np.nan, dtype)
    matrix[valid] = np.asarray(flat, dtype).reshape(-1, d)
    return matrix, valid


def _pair(a, b):
    x, xv = as_matrix(a)
    y, yv = as_matrix(b)
    if x.shape[1] != y.shape[1] and xv.any() and yv.any():
        raise ValueError(f"different vector dimensions {x.shape[1]} and {y.shape[1]}")
    return x, y, xv & yv


def _floats(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=~valid)


def _vectors(matrix: np.ndarray, valid: np.ndarray) -> pa.Array:
    n, d = matrix.shape
    flat = pa.array(matrix.astype(np.float32).ravel(), pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    lists = pa.ListArray.from_arrays(offsets, flat, type=VECTOR_ARG)
    return pc.if_else(pa.array(valid), lists, pa.nulls(n, VECTOR_ARG))


def l1_distance(a, b) -> pa.Array:
    x, y, valid = _pair(a, b)
    return _floats(np.abs(x - y).sum(axis=1) if x.size else np.zeros(len(valid)), valid)


def cosine_similarity(a, b) -> pa.Array:
    x, y, valid = _pair(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return _floats(np.clip(result, -1.0, 1.0), valid)


def vector_dims(a) -> pa.Array:
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    return pc.list_value_length(a).cast(pa.int32())


def l2_norm(a) -> pa.Array:
    x, valid = as_matrix(a)
    return _floats(np.linalg.norm(x, axis=1) if x.size else np.zeros(len(valid)), valid)


def normalize_l2(a) -> pa.Array:
    x, valid = as_matrix(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        result = np.where(norms > 0, x / norms, 0.0)  # pgvector leaves a zero vector as is
    return _vectors(result, valid)


def _elementwise(op):
    def apply(a, b) -> pa.Array:
        x, y, valid = _pair(a, b)
        return _vectors(op(x, y), valid)
    return apply


_UDFS = [
    (l1_distance, [VECTOR_ARG, VECTOR_ARG], pa.float64(), "l1_distance"),
    (cosine_similarity, [VECTOR_ARG, VECTOR_ARG], pa.float64(), "cosine_similarity"),
    (vector_dims, [VECTOR_ARG], pa.int32(), "vector_dims"),
    (l2_norm, [VECTOR_ARG], pa.float64(), "l2_norm"),
    (normalize_l2, [VECTOR_ARG], VECTOR_ARG, "normalize_l2"),
    (_elementwise(np.add), [VECTOR_ARG, VECTOR_ARG], VECTOR_ARG, "vector_add"),
    (_elementwise(np.subtract), [VECTOR_ARG, VECTOR_ARG], VECTOR_ARG, "vector_sub"),
    (_elementwise(np.multiply), [VECTOR_ARG, VECTOR_ARG], VECTOR_ARG, "vector_mul"),
]


def register(ctx: SessionContext) -> None:
    """Add the vector UDFs to a DataFusion context."""
    for fn, inputs, output, name in _UDFS:
        ctx.register_udf(udf(fn, inputs, output, "immutable", name=name))


_ELEMENTWISE = {exp.Add: "vector_add", exp.Sub: "vector_sub", exp.Mul: "vector_mul"}


def elementwise_operators(tree: exp.Expression, vector_columns: set[str]) -> exp.Expression:
    """`a + b`, `a - b`, `a * b` where a side is a vector (a column of a vector type, a
    vector literal or cast, or another vector expression) become `vector_add(a, b)` etc.
    Needs the vector columns of the tables the statement reads, so it runs at bind time."""
    def is_vector(node: exp.Expression) -> bool:
        node = node.unnest()
        if isinstance(node, exp.Array):
            return True
        if isinstance(node, exp.Cast):
            return node.to.this == exp.DataType.Type.VECTOR
        if isinstance(node, exp.Column):
            return node.name in vector_columns
        if isinstance(node, exp.Anonymous):
            return node.name.lower() in ("vector_add", "vector_sub", "vector_mul", "normalize_l2")
        return False

    from omnilake.engine.rewrites import _literal_array, vector_array
    from omnilake.engine.walk import nodes

    changed = True  # one replacement per pass: a replacement copies the nodes below it
    while changed:
        changed = False
        for node in [n for n in nodes(tree, prune=_literal_array) if isinstance(n, tuple(_ELEMENTWISE))]:
            if is_vector(node.this) or is_vector(node.expression):
                for side in (node.this, node.expression):  # '[1,2]' typed by the other side
                    if isinstance(side, exp.Literal) and side.is_string and vector_array(side):
                        side.replace(vector_array(side))
                node.replace(exp.Anonymous(this=_ELEMENTWISE[type(node)],
                                           expressions=[node.this.copy(), node.expression.copy()]))
                changed = True
                break
    return tree
