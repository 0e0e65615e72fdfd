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

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from sqlglot import exp

from omnilake.engine import dialect
from omnilake.engine.tables import ident
from omnilake.engine.vector_functions import as_matrix, l1_distance

if TYPE_CHECKING:
    from omnilake.catalog.indexes import VectorIndexDef
    from omnilake.engine.query import BoundQuery
    from omnilake.engine.scan import Column
    from omnilake.engine.vector_search import Search

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
            arrays.append(_distances(plan.search, distance, rows, np.asarray(query, np.float64)))
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


def _distances(search: "Search", distance: exp.Expression, rows: pa.Table,
               query: np.ndarray) -> pa.Array:
    """`distance` between each row's vector and `query`, in float64; NULL where the row
    has no vector (and, for cosine, where either vector is zero)."""
    column = rows.column(search.column.name)
    metric = search.metric
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


# -- planned from the statement's text ------------------------------------------------------
_STATEMENT_CLAUSES = frozenset({"expressions", "from_", "order", "limit"})


@dataclass(frozen=True)
class Distance:
    """A projection of the search's own distance (its parameter: `query`), named `name`."""

    name: str
    query: int


@dataclass(frozen=True)
class SearchStatement:
    """`SELECT <columns or the distance> FROM t ORDER BY v <op> $1 LIMIT k`, worked out from
    its text once (engine/key_lookup.py does the same for key lookups), so a DB-API
    statement text or a prepared wire statement runs its search with each query vector
    without copying, binding and rewriting the statement: the same search and rows as the
    general path's."""

    table: exp.Table  # the FROM entry (read only)
    alias: str
    projections: tuple  # as key_lookup.Lookup's, and Distance entries
    column: tuple  # (qualifier or None, name) of the vector column
    distance: exp.Expression  # the ORDER BY distance (read only: its kind)
    query: int  # the parameter holding the query vector
    k: int
    positional: int  # `%s` placeholders: the parameters must be exactly these


def plan(tree: exp.Expression) -> SearchStatement | None:
    """The search statement `tree` is, or None. Reads `tree` only."""
    from omnilake.engine import key_lookup
    from omnilake.engine.params import parameter_key, placeholders
    from omnilake.engine.vector_search import _constant_int
    source = key_lookup.stored_table(tree, _STATEMENT_CLAUSES)
    if source is None:
        return None
    order, limit = tree.args.get("order"), tree.args.get("limit")
    if order is None or not isinstance(limit, exp.Limit) or len(order.expressions) != 1:
        return None
    ordered = order.expressions[0]
    if ordered.args.get("desc") or ordered.args.get("nulls_first"):
        return None
    target = _order_target(tree)  # (the distance itself, or a projection named by ORDER BY)
    k = _constant_int(limit.expression)
    numbers = key_lookup.parameter_numbers(tree)
    if not isinstance(target, dialect.VectorDistance) or k is None or k < 1 or numbers is None:
        return None
    searched = _distance_parts(target, numbers)
    if searched is None:
        return None
    projections = []
    for projection in tree.expressions:
        name, value = None, projection
        if type(projection) is exp.Alias:
            name, value = projection.alias, projection.this.unnest()
        if isinstance(value, dialect.VectorDistance):
            parts = _distance_parts(value, numbers)
            if parts is None or type(value) is not type(target) or parts[0] != searched[0]:
                return None
            projections.append(Distance(name or "?column?", parts[1]))
            continue
        plain = key_lookup.plain_projections([projection])  # (reads, never re-parents)
        if plain is None:
            return None
        projections.extend(plain)
    used = {p.query for p in projections if isinstance(p, Distance)} | {searched[1]}
    if set(numbers.values()) - used:
        return None  # a parameter that is not the query vector
    positional = sum(1 for n in placeholders(tree) if parameter_key(n) is None)
    return SearchStatement(source[0], source[1], tuple(projections), searched[0], target,
                           searched[1], k, positional)


def _distance_parts(node: exp.Expression, numbers: dict) -> tuple | None:
    """((qualifier, name) of the vector column, parameter number) of `column <op> $n`."""
    from omnilake.engine import key_lookup
    left, right = node.this.unnest(), node.expression.unnest()
    if type(left) is not exp.Column:
        left, right = right, left
    if type(right) is exp.Cast and right.to.sql("postgres").lower().startswith("vector"):
        right = right.this  # `$1::vector`
    column = key_lookup.column_ref(left)
    if column is None or id(right) not in numbers:
        return None
    return column, numbers[id(right)]


@dataclass(frozen=True)
class _Layout:
    """What a search statement reads of one version of its table, worked out once."""

    statement: SearchStatement  # (its id is part of the key: kept alive with the entry)
    columns: list  # the table's
    column: Column  # the vector column
    outputs: tuple  # per projection: its (output name, column) pairs, or None for a distance
    read: list  # the columns the result is made of
    index: VectorIndexDef | None
    one_file: tuple | None  # (path, segment location): the snapshot is that one indexed file
    plain: bool  # the result is the `read` columns as they are (no distance, no renames)


_LAYOUTS: OrderedDict = OrderedDict()
_LAYOUTS_SIZE = 256
_layouts_lock = threading.Lock()


def _layout(session, statement: SearchStatement, ref, snapshot_id: int | None) -> _Layout | None:
    """The statement's layout on the table as loaded (None: the general path runs it).
    Metadata files are immutable, so one location (with the snapshot read) is one layout."""
    key = (id(statement), ref.table.metadata_location, snapshot_id)
    with _layouts_lock:
        found = _LAYOUTS.get(key)
        if found is not None and found.statement is statement:
            _LAYOUTS.move_to_end(key)
            return found
    from pyiceberg.expressions import AlwaysTrue

    from omnilake.engine import key_lookup, vector_search
    columns = ref.columns()
    by_name = {c.name: c for c in columns}
    column = key_lookup.resolve(statement.alias, by_name, *statement.column)
    if column is None or column.sql_type.name != "vector":
        return None
    outputs = []
    for projection in statement.projections:
        found = None if isinstance(projection, Distance) else key_lookup.output_columns(
            (projection,), statement.alias, by_name, ref)
        if found is None and not isinstance(projection, Distance):
            return None
        outputs.append(tuple(found) if found is not None else None)
    names = [out for found in outputs if found for out, _ in found] + \
        [p.name for p in statement.projections if isinstance(p, Distance)]
    if len(set(names)) != len(names):
        return None  # (DataFusion renames twins)
    read = list(dict.fromkeys([c.name for found in outputs if found for _, c in found]
                              + [column.name for found in outputs if found is None]))
    metric = vector_search.METRIC_OF[type(statement.distance)]
    index = vector_search._pick_index(ref, column, metric)
    one_file = None
    if index is not None and snapshot_id is not None:
        tasks = session.engine.plan_cache.plan(ref.table, snapshot_id, AlwaysTrue())[0]
        if len(tasks) == 1 and not tasks[0].delete_files:
            path = tasks[0].file.file_path
            if path in index.segments:
                one_file = (path, index.segments[path])
    plain = all(found is not None for found in outputs) and \
        [(out, c.name) for found in outputs for out, c in found] == [(name, name) for name in read]
    found = _Layout(statement, columns, column, tuple(outputs), read, index, one_file, plain)
    with _layouts_lock:
        _LAYOUTS[key] = found
        while len(_LAYOUTS) > _LAYOUTS_SIZE:
            _LAYOUTS.popitem(last=False)
    return found


def run(session, statement: SearchStatement, values) -> pa.Table | None:
    """The statement's rows with `values` for its parameters; None where the general path
    must run it (a value that is not a vector of the column's dimension, a missing table)."""
    from pyiceberg.expressions import AlwaysTrue

    from omnilake import errors as E
    from omnilake.engine import key_lookup, query, vector_search
    node = statement.table
    if not key_lookup.readable(session, node) or statement.query >= len(values) or (
            statement.positional and len(values) != statement.positional):
        return None
    vector = _vector_value(values[statement.query])
    if vector is None:
        return None
    for projection in statement.projections:  # `%s` twice: the same vector both times
        if isinstance(projection, Distance) and projection.query != statement.query and (
                projection.query >= len(values)
                or not _same_vector(values[projection.query], values[statement.query])):
            return None
    try:
        ref, snapshot_id, pending = query.table_rows(session, node)
    except E.UndefinedTable:
        return None
    layout = _layout(session, statement, ref, snapshot_id)
    if layout is None or layout.column.sql_type.params[0] != len(vector[0]):
        return None
    search = vector_search.Search(layout.column, vector_search.METRIC_OF[type(statement.distance)],
                                  vector[0][None, :], statement.k, None, statement.alias)
    rows = None
    if layout.one_file is not None and not pending:
        rows = vector_search.run_one_file(session, ref, search, layout.index, *layout.one_file,
                                          layout.columns, layout.read)
    if rows is None:
        tables, _ = vector_search.run(session, ref, search, snapshot_id, AlwaysTrue(), pending,
                                      layout.read)
        rows = tables[0].slice(0, statement.k)
    from omnilake.engine.query import normalise_output
    if layout.plain:
        return normalise_output(rows)
    fields, arrays = [], []
    for projection, found in zip(statement.projections, layout.outputs):
        if found is None:
            fields.append(pa.field(projection.name, pa.float64()))
            arrays.append(_distances(search, statement.distance, rows, vector[1]))
            continue
        fields.extend(rows.schema.field(c.name).with_name(out) for out, c in found)
        arrays.extend(rows.column(c.name) for _, c in found)
    return normalise_output(pa.Table.from_arrays(arrays, schema=pa.schema(fields)))


def _vector_value(value) -> tuple[np.ndarray, np.ndarray] | None:
    """A parameter as the query vector the general path would take from it (float32 for
    the search, float64 as written for distances), or None (NaN, nested lists, text that
    is not a vector: left to the general path, which reports them)."""
    if isinstance(value, str):  # pgvector's text form, as a wire client sends '[1,2,3]'
        from omnilake.engine.rewrites import vector_text_values
        value = vector_text_values(value)
        if not value:
            return None
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iuf":
            return None
        written = value.astype(np.float64)
    elif isinstance(value, (list, tuple)) and value and all(
            type(v) is int or type(v) is float for v in value):
        written = np.asarray(value, np.float64)
    else:
        return None
    if not np.isfinite(written).all():
        return None
    return written.astype(np.float32), written


def _same_vector(a, b) -> bool:
    a, b = _vector_value(a), _vector_value(b)
    return a is not None and b is not None and np.array_equal(a[1], b[1])
