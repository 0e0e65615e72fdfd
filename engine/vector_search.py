"""Planning and running nearest-neighbour searches: `ORDER BY v <op> q LIMIT k`.

A SELECT over one table (alone in its FROM, also inside a subquery or CTE) whose ORDER BY is
a distance between a vector column and a constant vector, with a constant LIMIT, is a
search. Its table is not scanned in full: the search finds the k nearest rows that satisfy
the WHERE clause, and the query runs unchanged over just those rows, so projections,
ordering, the final LIMIT and outer joins are DataFusion's as for any query.

The rows come from every source of the table at the statement's snapshot:
- data files with a segment of a matching index (same column, same metric): faiss search;
- other data files, files with delete files, and memtable rows: exact search on the
  distance/top-k kernel (`gpu/`, NumPy on CPU).
Every source yields the k nearest of its rows that match the WHERE clause, so k rows come
back whenever k rows match: the WHERE clause is evaluated on the source's rows first;
where few rows match (at most `vector_exact_rows` at 128 dimensions, proportionally fewer for
wider vectors) they are searched exactly (filter-first),
otherwise faiss searches with the matching rows as an ID filter, and the search widens
(ef_search / probes doubled) until it returns as many as match, falling back to the exact
search. Rows deleted or updated are in no file of the snapshot, so they never come back.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from sqlglot import exp

from omnilake import errors as E
from omnilake.catalog.indexes import INDEXES_PROPERTY, VectorIndexDef, read_indexes
from omnilake.engine import dialect
from omnilake.engine.planning import plan_sql
from omnilake.engine.query import batches_of, new_statement_name
from omnilake.engine.scan import Column, _read_with_pyiceberg, engine_schema, pending_in_scan_types
from omnilake.engine.tables import TableRef, ident
from omnilake.engine.vector_functions import as_matrix
from omnilake.engine.vector_index import (default_ef_search, default_probes, setting,
                                           without_views)
from omnilake.gpu import kernels
from omnilake.gpu.backend import get_backend

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

METRIC_OF = {dialect.L2Distance: "l2", dialect.CosineDistance: "cosine",
             dialect.NegativeInnerProduct: "ip", dialect.L1Distance: "l1"}
POSITION = "__ol_pos"
MAX_BREADTH = 4096  # widest ef_search / probes tried before the exact search takes over


@dataclass
class Search:
    """A matched search: which column, which metric, which query vector, how many rows."""

    column: Column
    metric: str
    query: np.ndarray  # (n_queries, d)
    k: int
    where: exp.Expression | None
    alias: str


@dataclass
class SearchPlan:
    """What a search did; EXPLAIN prints `describe()` as the table's scan line."""

    table: str
    search: Search
    index: VectorIndexDef | None = None
    breadth: int = 0
    breadth_set: bool = False  # SET by the session; else the default, per segment size
    breadth_used: int = 0      # the largest starting breadth of any segment searched
    segments_used: int = 0
    files: int = 0
    files_exact: int = 0
    filter_first: int = 0
    widened: int = 0
    pending_rows: int = 0
    candidates: int = 0
    columns: list[Column] = field(default_factory=list)
    result: pa.Table | None = None
    private: str = ""  # the statement's name for `result` in DataFusion, where it runs there
    # Per query, the distances of its candidate rows in their order (nearest first; +inf for
    # a matching row without a vector), so callers need not compute them again.
    distances: list[np.ndarray] = field(default_factory=list)

    def describe(self) -> str:
        s = self.search
        if self.index is not None:
            knob = "ef_search" if self.index.method == "hnsw" else "probes"
            how = (f"index={self.index.name} using {self.index.method} ({self.index.opclass}) "
                   f"{knob}={self.breadth_used or self.breadth}"
                   f"{'' if self.breadth_set else ' (default)'} "
                   f"segments={self.segments_used}/{self.files}")
        else:
            how = "exact (no index on this column for this metric)"
        where = s.where.sql("postgres") if s.where is not None else "none"
        return (f"VectorSearch: table={self.table} column={s.column.name} metric={s.metric} "
                f"k={s.k} {how} exact_files={self.files_exact} memtable_rows={self.pending_rows} "
                f"filter=[{where}] filter_first_sources={self.filter_first} "
                f"widened={self.widened} candidates={self.candidates}")


# -- matching ----------------------------------------------------------------------------
def match(node: exp.Table, ref: TableRef) -> Search | None:
    """The search that `node` (a table in a FROM) serves, or None for an ordinary scan."""
    parent = node.parent
    if not isinstance(parent, exp.From):
        return None
    select = parent.parent
    if not isinstance(select, exp.Select) or select.args.get("joins"):
        return None
    if any(select.args.get(key) for key in ("group", "having", "distinct", "qualify")):
        return None
    order, limit = select.args.get("order"), select.args.get("limit")
    if order is None or limit is None or len(order.expressions) != 1:
        return None
    if any(p.find(exp.AggFunc, exp.Window) for p in select.expressions):
        return None
    k = _constant_int(limit.expression)
    offset = select.args.get("offset")
    if offset is not None:
        extra = _constant_int(offset.expression)
        k = None if extra is None or k is None else k + extra
    if k is None or k < 1:
        return None
    alias = node.alias_or_name if node.alias else ident(node.this)
    columns = {c.name: c for c in ref.columns()}
    ordered = order.expressions[0]
    if ordered.args.get("nulls_first"):
        return None  # rows without a vector first: not a nearest-neighbour search
    target = _resolve_alias(ordered.this.unnest(), select)
    found = _distance(target, bool(ordered.args.get("desc")))
    if found is None:
        return None
    metric, left, right = found
    column = _vector_column(left, alias, columns)
    if column is not None:
        constant = _constant_vector(right)
    else:
        column, constant = _vector_column(right, alias, columns), _constant_vector(left)
    if column is None or constant is None:
        return None
    where = select.args.get("where")
    where = where.this if where is not None else None
    if where is not None:
        if where.find(exp.Subquery, exp.Select, exp.Exists, exp.AggFunc, exp.Window):
            return None
        for c in where.find_all(exp.Column):
            qualifier = ident(c.args.get("table"))
            if (qualifier is not None and qualifier != alias) or ident(c.this) not in columns:
                return None
    dim = column.sql_type.params[0]
    if len(constant) != dim:
        raise E.DataError(f"different vector dimensions {dim} and {len(constant)}",
                          hint=f'column "{column.name}" holds vector({dim})')
    return Search(column, metric, np.asarray([constant], np.float32), k, where, alias)


def _constant_int(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    return None


def _resolve_alias(node: exp.Expression, select: exp.Select) -> exp.Expression:
    """`ORDER BY d` where `d` names a projection: the projection's expression."""
    if isinstance(node, exp.Column) and node.args.get("table") is None:
        for projection in select.expressions:
            if isinstance(projection, exp.Alias) and projection.alias == node.name:
                return projection.this.unnest()
    return node


def _distance(node: exp.Expression, desc: bool):
    if isinstance(node, dialect.VectorDistance) and not desc:
        return METRIC_OF[type(node)], node.this.unnest(), node.expression.unnest()
    if isinstance(node, exp.Anonymous) and node.name.lower() == "inner_product" and desc \
            and len(node.expressions) == 2:
        return "ip", node.expressions[0].unnest(), node.expressions[1].unnest()
    return None


def _vector_column(node: exp.Expression, alias: str, columns: dict[str, Column]) -> Column | None:
    if not isinstance(node, exp.Column):
        return None
    qualifier = ident(node.args.get("table"))
    if qualifier is not None and qualifier != alias:
        return None
    column = columns.get(ident(node.this))
    return column if column is not None and column.sql_type.name == "vector" else None


def _constant_vector(node: exp.Expression) -> list[float] | None:
    if isinstance(node, exp.Cast):
        node = node.this
    if isinstance(node, dialect.NumberArray):
        return [float(v) for v in node.args["values"]]
    if not isinstance(node, exp.Array):
        return None
    values = []
    for item in node.expressions:
        item = item.unnest()
        sign = 1.0
        if isinstance(item, exp.Neg):
            sign, item = -1.0, item.this
        if not isinstance(item, exp.Literal) or item.is_string:
            return None
        values.append(sign * float(item.this))
    return values


# -- running -----------------------------------------------------------------------------
@dataclass
class _Source:
    rows: pa.Table
    path: str | None = None   # a data file whose positions are index ids


def run(session: "Session", ref: TableRef, search: Search, snapshot_id: int | None,
        row_filter, pending: list[pa.Table],
        outputs: list[str] | None = None) -> tuple[list[pa.Table], SearchPlan]:
    """The candidate rows of every query: for each, a table (engine column types) holding
    the k nearest rows that match the WHERE clause (fewer only where fewer match), in the
    columns named by `outputs` (all by default)."""
    engine = session.engine
    columns = ref.columns()
    plan = SearchPlan(ref.qualified, search, columns=columns)
    index = _pick_index(ref, search.column, search.metric)
    if index is not None:
        _use_index(session, ref, plan, index)
    tasks = engine.plan_cache.plan(ref.table, snapshot_id, row_filter)[0] \
        if snapshot_id is not None else []
    plan.files = len(tasks)
    sources = []
    with_deletes = [t for t in tasks if t.delete_files]
    for task in tasks:
        if not task.delete_files:
            path = task.file.file_path
            sources.append(_Source(engine.vectors.file_rows(ref, path, columns), path))
    if with_deletes:
        sources.append(_Source(_read_with_pyiceberg(ref.table, with_deletes, columns)))
        plan.files_exact += len(with_deletes)
    if pending:
        plan.pending_rows = sum(t.num_rows for t in pending)
        sources.append(_Source(pending_in_scan_types(pending, columns)))
    n_queries = search.query.shape[0]
    found: list[list[tuple[np.ndarray, np.ndarray, int]]] = [[] for _ in range(n_queries)]
    for number, source in enumerate(sources):
        results = _search_source(session, ref, search, index, source, plan)
        for q, (distances, positions) in enumerate(results):
            found[q].append((distances, positions, number))
    tables = []
    for q in range(n_queries):
        rows, distances = _gather(sources, found[q], search.k, columns, outputs)
        tables.append(rows)
        plan.distances.append(distances)
    plan.candidates = sum(t.num_rows for t in tables)
    return tables, plan


def _use_index(session: "Session", ref: TableRef, plan: SearchPlan, index: VectorIndexDef) -> None:
    """Search with `index`: its search setting (SET or default) on `plan`; and keep the
    table's indexes current from now on."""
    plan.index = index
    knob = "hnsw.ef_search" if index.method == "hnsw" else "ivfflat.probes"
    plan.breadth = setting(session, knob)
    plan.breadth_set = session.variables.get(knob) is not None
    session.engine.vectors.watch(ref.namespace, ref.name)


def _pick_index(ref: TableRef, column: Column, metric: str) -> VectorIndexDef | None:
    usable = [i for i in _indexes(ref.table.properties.get(INDEXES_PROPERTY))
              if i.field_id == column.field_id and i.metric == metric]
    usable.sort(key=lambda i: (i.method != "hnsw", i.name))
    return usable[0] if usable else None


@functools.lru_cache(maxsize=64)
def _indexes(registry: str | None) -> tuple[VectorIndexDef, ...]:
    """A table's index registry, parsed once per version of its text (every search reads
    it): shared, so read only."""
    return tuple(read_indexes({INDEXES_PROPERTY: registry} if registry else {}).values())


def _search_source(session: "Session", ref: TableRef, search: Search, index, source: _Source,
                   plan: SearchPlan) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: (distances, row positions in the source), the k nearest matching rows."""
    rows = source.rows
    n_queries = search.query.shape[0]
    if rows.num_rows == 0:
        empty = (np.empty(0, np.float64), np.empty(0, np.int64))
        return [empty] * n_queries
    vectors = session.engine.vectors
    mask = None
    if search.where is not None:
        if source.path is None or not _cacheable(search.where):
            mask = _where_mask(session, search, rows)
        else:
            mask = vectors.file_mask(source.path, ref.table.metadata.current_schema_id,
                                     f"{search.alias}:{search.where.sql('postgres')}",
                                     lambda: _where_mask(session, search, rows))
    if source.path is not None:
        matrix, valid = vectors.file_vectors(ref, source.path, rows, search.column.name)
    else:
        matrix, valid = as_matrix(rows.column(search.column.name), np.float32)
    # (count_nonzero: summing a million booleans converts them to integers first, ~1 ms)
    matching = int(np.count_nonzero(mask)) if mask is not None else rows.num_rows
    if matching == 0:
        return [(np.empty(0, np.float64), np.empty(0, np.int64))] * n_queries
    location = index.segments.get(source.path) if index is not None and source.path else None
    # The exact search's cost grows with rows x dimensions (gathering the matching rows'
    # vectors is most of it), the filtered index search's much less: measured on 100k
    # clustered rows, exact wins up to ~10k matching rows at 128 dimensions and ~4k at 384.
    exact_limit = session.engine.settings.vector_exact_rows * EXACT_ROWS_DIMS // max(
        1, matrix.shape[1])
    if location and (mask is None or matching > exact_limit):
        segment = session.engine.vectors.segment(ref, index, location)
        plan.segments_used += 1
        found = _search_segment(segment, search, mask, plan)
        if found is not None:
            return _cosine_again(session, search, matrix, found)
    elif source.path is not None:
        plan.files_exact += 1
    if location and mask is not None and matching <= exact_limit:
        plan.filter_first += 1
    prepared = None
    if source.path is not None and mask is None and bool(valid.all()):
        prepared = vectors.file_prepared(ref, source.path, search.column.name, matrix,
                                         get_backend(session.engine.settings.device))
    return _search_exact(session, search, matrix, valid, mask, prepared)


EXACT_ROWS_DIMS = 128  # vector_exact_rows counts rows of this many dimensions


def run_one_file(session: "Session", ref: TableRef, search: Search, index: VectorIndexDef,
                 path: str, location: str, columns: list[Column],
                 outputs: list[str]) -> pa.Table | None:
    """run() for one query, unfiltered, on a snapshot of one data file that `index` covers
    (segment at `location`) and no memtable rows: a loaded, indexed table, as collections
    mostly are. The same rows as run() (the same segment search, distances and order),
    in the `outputs` columns, without its per-source bookkeeping, which costs more than it
    seems: faiss leaves the CPU caches cold, so each step after it runs slowly (in a loop on
    200k x 128 vectors, faiss took 0.25 ms of 0.77 ms per statement). None when the
    segment cannot give k rows (run() then searches exactly)."""
    engine = session.engine
    plan = SearchPlan(ref.qualified, search)
    _use_index(session, ref, plan, index)
    found = _search_segment(engine.vectors.segment(ref, index, location), search, None, plan)
    if found is None or not len(found[0][1]):
        return None
    rows = engine.vectors.file_rows(ref, path, columns)
    ids = found[0][1]  # nearest first (faiss sorts them)
    if search.metric == "cosine":
        matrix, _ = engine.vectors.file_vectors(ref, path, rows, search.column.name)
        ((distances, ids),) = _cosine_again(session, search, matrix, found)
        ids = ids[np.argsort(distances, kind="stable")]
    return _take(rows.select(outputs), ids[:search.k])


def _take(rows: pa.Table, positions: np.ndarray) -> pa.Table:
    """rows.take(positions), plain numbers through NumPy: Arrow's take, on the caches a faiss
    search leaves cold, cost ~80 us for ten rows of one column, this ~50."""
    arrays = []
    for column in rows.columns:
        kind = column.type
        if column.num_chunks == 1 and not column.null_count and (
                pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            arrays.append(pa.array(column.chunk(0).to_numpy()[positions], kind))
        else:
            arrays.append(column.take(positions))
    return pa.Table.from_arrays(arrays, schema=rows.schema)


def _cosine_again(session: "Session", search: Search, matrix: np.ndarray, found: list) -> list:
    """A segment's cosine matches with their distances computed on the exact kernel: faiss
    holds zero vectors as they are (their cosine is undefined) and gives them distance 1,
    the kernel NaN, which ranks them last, as PostgreSQL ranks NaN. Other metrics: as
    found."""
    if search.metric != "cosine":
        return found
    backend = get_backend(session.engine.settings.device)
    return [(backend.to_numpy(kernels.pairwise_distances(
                search.query[q:q + 1], matrix[ids], search.metric, backend))[0]
             .astype(np.float64) if len(ids) else np.empty(0, np.float64), ids)
            for q, (_, ids) in enumerate(found)]


def _cacheable(where: exp.Expression) -> bool:
    """A filter whose result depends only on the row: no function calls but casts (now(),
    random() and the like would change between statements)."""
    return all(isinstance(f, exp.Cast) for f in where.find_all(exp.Func))


def _search_segment(segment, search: Search, mask: np.ndarray | None,
                    plan: SearchPlan) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per query, (distances, row ids) from faiss, nearest first, widened until every query
    has as many rows as can match; None when even the widest search falls short (the
    caller searches exactly). The distances are exact (HNSW and IVF-flat keep the vectors
    as they are; float32, as the exact kernel's), so candidates of every source compare
    alike without computing them again (up to 0.1 ms a search), cosine aside
    (_cosine_again)."""
    allowed = segment.count if mask is None else int(np.count_nonzero(mask))
    want = min(search.k, allowed)
    breadth = plan.breadth
    if not plan.breadth_set:
        breadth = (default_ef_search(segment.count) if segment.method == "hnsw"
                   else default_probes(segment.lists))
    plan.breadth_used = max(plan.breadth_used, breadth)
    if mask is not None:
        # With a fraction f of the rows allowed, a search that visits ef rows meets about
        # f * ef allowed ones: start from at least k / f so that k of them can be found, and
        # from ef / f^(2/3). (Measured on 3000 clustered rows at f = 10%: recall@10 0.88 at
        # ef 100, 0.98 at 200, 1.0 at 400; unfiltered 0.975 at 100. On 1M x 128 with the
        # default 125, ef / sqrt(f) gave 0.990 at f = 10% and 0.986 at 50%, where about
        # 450 and 200 give 0.992-0.994; ef / f^(2/3) is 580 and 198. It costs where a small
        # fraction is searched through the index: at 1%, 6.4 -> 9.4 ms, recall 0.996 -> 1.0.)
        fraction = max(allowed / len(mask), 1e-9)
        breadth = min(MAX_BREADTH, max(breadth, math.ceil(breadth / fraction ** (2 / 3)),
                                       math.ceil(search.k / fraction)))
    while True:
        distances, ids = segment.search(search.query, search.k, breadth, mask)
        found = ids >= 0
        if found.all():  # k rows for every query (the usual case): nothing to drop
            return [(distances[q].astype(np.float64), ids[q]) for q in range(ids.shape[0])]
        counts = found.sum(axis=1)
        if mask is None:
            enough = bool((counts >= want).all())
        else:
            # Rows with a NULL vector match the filter but are not in the index.
            enough = bool((counts >= min(want, segment.count)).all())
        if enough:
            return [(distances[q][found[q]].astype(np.float64), ids[q][found[q]])
                    for q in range(ids.shape[0])]
        if breadth >= MAX_BREADTH:
            return None
        breadth = min(breadth * 2, MAX_BREADTH)
        plan.widened += 1


def _search_exact(session: "Session", search: Search, matrix: np.ndarray, valid: np.ndarray,
                  mask: np.ndarray | None, prepared: kernels.Prepared | None = None):
    """`prepared`: all of `matrix`, made ready for the kernel (used when every row is
    searched)."""
    keep = valid if mask is None else (valid & mask)
    positions = np.nonzero(keep)[0]
    backend = get_backend(session.engine.settings.device)
    results = []
    if len(positions):
        base = matrix if len(positions) == len(matrix) else matrix[positions]
        if prepared is not None and base is matrix:
            base = prepared
        distances, picked = kernels.topk(search.query, base, search.k, search.metric, backend)
    else:
        distances = np.empty((search.query.shape[0], 0), np.float32)
        picked = np.empty((search.query.shape[0], 0), np.int64)
    # Matching rows with a NULL vector sort after all others (NULLS LAST): only needed
    # when fewer than k rows with a vector match.
    nulls = np.nonzero(~valid & (mask if mask is not None else True))[0]
    for q in range(search.query.shape[0]):
        d, p = distances[q].astype(np.float64), positions[picked[q]]
        short = search.k - len(p)
        if short > 0 and len(nulls):
            p = np.concatenate([p, nulls[:short]])
            d = np.concatenate([d, np.full(min(short, len(nulls)), math.inf)])
        results.append((d, p))
    return results


def _where_mask(session: "Session", search: Search, rows: pa.Table) -> np.ndarray:
    """Which rows satisfy the WHERE clause, evaluated by DataFusion over the rows."""
    from omnilake.engine.dialect import to_datafusion
    from omnilake.engine.errors import from_datafusion
    ctx = session.engine.datafusion
    name = new_statement_name("vs")
    data = rows.append_column(POSITION, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    alias = search.alias.replace('"', '""')
    sql = (f'SELECT "{POSITION}" FROM "{name}" AS "{alias}" '
           f"WHERE {to_datafusion(search.where)}")
    ctx.register_record_batches(name, [batches_of(data)])
    try:
        picked = plan_sql(ctx, sql).to_arrow_table().column(0).to_numpy()
    except Exception as exc:
        raise from_datafusion(exc) from exc
    finally:
        ctx.deregister_table(name)
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[picked] = True
    return mask


def _gather(sources: list[_Source], found, k: int, columns: list[Column],
            outputs: list[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """The k nearest of all sources' candidates, as rows nearest first (in the `outputs`
    columns; all by default), and their distances."""
    def rows_of(number: int) -> pa.Table:
        rows = sources[number].rows
        return without_views(rows if outputs is None else rows.select(outputs))

    if len(found) == 1:  # one source (one data file, no memtable rows): the usual case
        distances, positions, number = found[0]
        if len(distances):
            best = np.argsort(distances, kind="stable")[:k]
            return rows_of(number).take(positions[best]), distances[best]
    distances = np.concatenate([d for d, _, _ in found]) if found else np.empty(0, np.float64)
    if not len(distances):
        empty = pa.Table.from_batches([], schema=engine_schema(columns))
        return (empty if outputs is None else empty.select(outputs)), distances
    positions = np.concatenate([p for _, p, _ in found])
    owners = np.concatenate([np.full(len(p), n) for _, p, n in found])
    best = np.argsort(distances, kind="stable")[:k]
    distances, positions, owners = distances[best], positions[best], owners[best]
    numbers = np.unique(owners)
    if len(numbers) == 1:
        return rows_of(int(numbers[0])).take(positions), distances
    parts, placed = [], []
    for number in numbers.tolist():
        picked = np.nonzero(owners == number)[0]
        parts.append(rows_of(number).take(positions[picked]))
        placed.append(picked)
    # Back into distance order: row i of the concatenation belongs at placed[i].
    order = np.argsort(np.concatenate(placed), kind="stable")
    return pa.concat_tables(parts).take(order), distances


# -- batch search (conn.vector_search) ------------------------------------------------------
def batch_search(session: "Session", table: str, queries, k: int, filter: str | None = None,  # noqa: A002
                 column: str | None = None, metric: str | None = None) -> pa.Table:
    """The k nearest rows of `table` for every row of `queries` (a NumPy matrix or a list
    of vectors), as one Arrow table: `query` (the row number in `queries`), `distance`,
    then the table's columns; nearest first within each query. `filter` is a SQL boolean
    expression over the table's columns."""
    from omnilake.engine import rewrites
    from omnilake.engine.dml import _split_dotted
    from omnilake.engine.query import normalise_output
    from omnilake.engine.tables import load

    if not isinstance(k, (int, np.integer)) or k < 1:
        raise E.InvalidParameterValue(f"k must be a positive integer, not {k!r}")
    namespace, name = _split_dotted(table, session.schema)
    with session.engine.writer.reading(namespace, name) as pending_rows:
        ref = load(session.engine, namespace, name)
        pending = pending_rows()
    columns = {c.name: c for c in ref.columns()}
    vector_columns = [c for c in columns.values() if c.sql_type.name == "vector"]
    if column is None:
        if len(vector_columns) != 1:
            raise E.InvalidParameterValue(
                f"table {ref.qualified} has {len(vector_columns)} vector columns; name one with column=")
        target = vector_columns[0]
    else:
        target = ref.column(column)
        if target.sql_type.name != "vector":
            raise E.DatatypeMismatch(f'column "{column}" is of type {target.sql_type}, not a vector')
    if metric is None:
        indexes = [i for i in read_indexes(ref.table.properties).values()
                   if i.field_id == target.field_id]
        metric = indexes[0].metric if indexes else "l2"
    if metric not in METRIC_OF.values():
        raise E.InvalidParameterValue(f"unknown metric {metric!r}; use one of l2, cosine, ip, l1")
    matrix = np.asarray(queries, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    dim = target.sql_type.params[0]
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise E.DataError(f"different vector dimensions {dim} and "
                          f"{matrix.shape[-1] if matrix.ndim else 0}",
                          hint=f"queries must be an (n, {dim}) matrix")
    if not np.isfinite(matrix).all():
        raise E.DataError("NaN and infinite values are not allowed in a vector",
                          hint="replace them in the query matrix")
    where = None
    if filter:
        tree = rewrites.apply(session.parse(f"SELECT 1 FROM {_quoted(name)} WHERE {filter}")[0])
        where = tree.args["where"].this
    search = Search(target, metric, matrix, int(k), where, name)
    snapshot = ref.table.current_snapshot()
    from pyiceberg.expressions import AlwaysTrue
    tables, plan = run(session, ref, search, snapshot.snapshot_id if snapshot else None,
                       AlwaysTrue(), pending)
    parts = []
    for q, rows in enumerate(tables):
        # The search's distances, nearest first; a row without a vector has none (NULL).
        distances = plan.distances[q]
        missing = rows.column(target.name).is_null().to_numpy(zero_copy_only=False)
        rows = rows.add_column(0, "distance", pa.array(distances, pa.float64(),
                                                       mask=missing if missing.any() else None))
        rows = rows.add_column(0, "query", pa.array(np.full(rows.num_rows, q, np.int32)))
        parts.append(rows)
    return normalise_output(pa.concat_tables(parts))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
