"""The result of a plain nearest-neighbour query, straight from the search's rows.

`SELECT <columns> FROM t [WHERE ...] ORDER BY v <op> q LIMIT k [OFFSET n]` is the query
pgvector users send most. The search (engine/vector_search.py) has already found its rows,
nearest first, filtered by the WHERE clause. When the statement does nothing more than pick
columns of those rows (or `*`, or the distance itself), running it through DataFusion only
sorts k rows again: about 0.8 ms of planning and execution, more than an HNSW search on
100,000 vectors takes. Here the rows are sliced and the columns picked in Arrow instead.
Anything else (other expressions, joins, subqueries, EXPLAIN) goes through DataFusion.

The distance as a projection is computed here in float64 from the vectors and the query as
written, as DataFusion's `array_distance`, `cosine_distance` (NULL for a zero vector) and
`inner_product` do, and as the `l1_distance` UDF does (the same function).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from sqlglot import exp

from omnilake.engine import dialect
from omnilake.engine.tables import ident
from omnilake.engine.vector_functions import as_matrix, l1_distance

if TYPE_CHECKING:
    from omnilake.engine.query import BoundQuery
    from omnilake.engine.vector_search import SearchPlan

# The clauses a plain search statement may have; any other (DISTINCT, GROUP BY, WITH,
# windows, locking ...) sends it through DataFusion.
_CLAUSES = {"expressions", "from_", "where", "order", "limit", "offset"}


def direct_result(bound: "BoundQuery") -> pa.Table | None:
    """The statement's result built from its search's rows, or None when DataFusion must
    run it. Call after binding (tables replaced, unnamed outputs given private names)."""
    from omnilake.engine.vector_search import SearchPlan, _constant_int, _constant_vector
    tree = bound.tree
    if not isinstance(tree, exp.Select) or len(bound.scans) != 1:
        return None
    plan = bound.scans[0]
    if not isinstance(plan, SearchPlan) or plan.result is None:
        return None
    if any(value for key, value in tree.args.items() if key not in _CLAUSES):
        return None
    source = tree.args["from_"].this
    if not isinstance(source, exp.Table):
        return None
    alias = source.alias_or_name
    limit = _constant_int(tree.args["limit"].expression)
    offset = tree.args.get("offset")
    skip = _constant_int(offset.expression) if offset is not None else 0
    if limit is None or skip is None:
        return None
    rows = plan.result.slice(skip, limit)
    distance = _order_target(tree)
    fields, arrays = [], []
    for projection in tree.expressions:
        if isinstance(projection, exp.Star):
            if any(projection.args.values()):  # * EXCEPT (...), * REPLACE (...)
                return None
            fields.extend(rows.schema)
            arrays.extend(rows.columns)
            continue
        name, value = None, projection
        if isinstance(projection, exp.Alias):
            name, value = ident(projection.args["alias"]), projection.this.unnest()
        if _is_column_of(value, alias, rows):
            column = ident(value.this)
            fields.append(rows.schema.field(column).with_name(name or column))
            arrays.append(rows.column(column))
        elif distance is not None and name is not None and value == distance:
            query = _constant_vector(_query_side(distance))
            if query is None:
                return None
            arrays.append(_distances(plan, distance, rows, np.asarray(query, np.float64)))
            fields.append(pa.field(name, pa.float64()))
        else:
            return None
    from omnilake.engine.query import normalise_output
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if arrays \
        else rows.select([])
    return normalise_output(table, bound.renames, bound.declared)


def _order_target(tree: exp.Select) -> exp.Expression | None:
    """The ORDER BY distance, written out or through a projection's alias."""
    target = tree.args["order"].expressions[0].this.unnest()
    if isinstance(target, exp.Column) and target.args.get("table") is None:
        for projection in tree.expressions:
            if isinstance(projection, exp.Alias) and projection.alias == target.name:
                target = projection.this.unnest()
                break
    return target if isinstance(target, (dialect.VectorDistance, exp.Anonymous)) else None


def _is_column_of(node: exp.Expression, alias: str, rows: pa.Table) -> bool:
    if not isinstance(node, exp.Column):
        return False
    qualifier = node.args.get("table")
    if qualifier is not None and qualifier.name != alias:
        return False
    return ident(node.this) in rows.column_names


def _query_side(distance: exp.Expression) -> exp.Expression:
    """The constant vector of `distance` (the side that is not the column)."""
    left, right = (distance.this, distance.expression) if isinstance(
        distance, dialect.VectorDistance) else distance.expressions
    return right.unnest() if isinstance(left.unnest(), exp.Column) else left.unnest()


def _distances(plan: "SearchPlan", distance: exp.Expression, rows: pa.Table,
               query: np.ndarray) -> pa.Array:
    """`distance` between each row's vector and `query`, in float64; NULL where the row
    has no vector (and, for cosine, where either vector is zero)."""
    column = rows.column(plan.search.column.name)
    metric = plan.search.metric
    if metric == "l1":
        return l1_distance(column, pa.array([query.tolist()] * rows.num_rows,
                                            pa.list_(pa.float64())))
    matrix, valid = as_matrix(column, np.float64)
    if not rows.num_rows:
        return pa.array([], pa.float64())
    if not valid.any():
        return pa.nulls(rows.num_rows, pa.float64())
    if metric == "l2":
        values = np.sqrt(((matrix - query) ** 2).sum(axis=1))
    elif metric == "ip":  # `v <#> q` is the negative inner product, inner_product(v, q) not
        values = matrix @ query
        if isinstance(distance, dialect.NegativeInnerProduct):
            values = -values
    else:  # cosine
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        valid = valid & (norms > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = 1.0 - (matrix @ query) / norms
    return pa.array(values, pa.float64(), mask=~valid)
