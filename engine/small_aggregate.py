"""Small GROUP BY queries over one table answered from the column cache, without DataFusion.

A dashboard panel asks for the maximum of one metric per minute of one series over an hour
(TSBS single-groupby): a few hundred rows, which the zone maps cut to one 64k-row chunk of
the cached columns. DataFusion executes that in ~0.3 ms but plans it in ~2 ms; here the same
statement is answered with Arrow compute: filter, bucket, hash aggregate, sort, limit.

What qualifies (anything else returns None and the statement runs through DataFusion):
- a SELECT of one stored table (no join, subquery, CTE, DISTINCT, HAVING or window), with
  GROUP BY, optionally ORDER BY and a constant LIMIT;
- projections: a column; `date_bin(INTERVAL 'n microseconds', column, 'origin')` (what
  time_bucket of a fixed interval becomes); `min`, `max` or `count` of a column, `count(*)`;
  `first(v, t)` / `last(v, t)` (as engine/timeseries.py writes them, named); aliased or
  not; every non-aggregate one grouped by (position, alias or the expression);
- WHERE: an AND of `column <op> literal` (=, <>, <, <=, >, >=): integers against integers,
  DOUBLE PRECISION against numbers, text against strings, timestamps against ISO strings;
- ORDER BY output positions, names or projected expressions;
- every data file held by the column cache without delete files, at most MAX_ROWS rows left
  after the zone maps (and TEXT_KEY_ROWS after the WHERE when a text column is a group key),
  no NaN in a floating-point column of a min or max (DataFusion orders NaN above every
  number, Arrow's min/max skip it).

The latest point of each series (TSBS lastpoint: `SELECT host, max(ts), last(v, ts) ... GROUP
BY host`) needs one row per series, not the 400k rows of a day of readings: when the group
keys and WHERE columns are tags of a time series, and the aggregates are min/max of its time
or first/last by it, each file contributes only its series edges, the first and last row of
each run of equal keys (ColumnCache.chunks, checked file by file: time must never decrease
within a run, as in files sorted by tags, then time). Memtable rows all take part.

min, max, count, first and last give exactly DataFusion's answer (first/last of rows tied
on time: either row, in both), so a statement answered here is only ever a faster way to
the same rows, names and types (tests/test_small_aggregate.py runs random statements both
ways). sum and avg are left to DataFusion: their floating-point results depend on the order
of additions.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from omnilake import errors as E
from omnilake.engine.key_lookup import cached_chunks, column_ref, readable, resolve, stored_table
from omnilake.engine.walk import nodes

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

MAX_ROWS = 1 << 17  # candidate rows; a larger statement is worth DataFusion's parallel plan
# Rows left after the WHERE when a text column is a group key: Acero groups strings at about a
# quarter of DataFusion's speed (131k rows into 1000 groups: 13.6 against 3.8 ms, planning
# included), even at ~8k rows.
TEXT_KEY_ROWS = 8192
_CLAUSES = frozenset({"expressions", "from_", "where", "group", "order", "limit"})
_INTEGER_TYPES = ("smallint", "integer", "bigint")
_FLOAT_TYPES = ("real", "double precision")
_TEXT_TYPES = ("text", "varchar")
_TIME_TYPES = ("timestamp", "timestamptz")
_COMPARISONS = {exp.EQ: pc.equal, exp.NEQ: pc.not_equal, exp.LT: pc.less,
                exp.LTE: pc.less_equal, exp.GT: pc.greater, exp.GTE: pc.greater_equal}
_AGGREGATES = {exp.Min: "min", exp.Max: "max", exp.Count: "count"}
_MICROSECONDS = re.compile(r"\s*(\d+)\s+microseconds?\s*\Z", re.I)
_ISO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?\Z")
_NS_RANGE_US = (1 << 63) // 1000  # DataFusion bins in nanoseconds: beyond this it overflows
_PER_KEY_NULLS = int(pa.__version__.split(".")[0]) >= 25  # sort keys with their NULL placement


@dataclass(frozen=True)
class _Item:
    """One projection: a group key (a column, or its date_bin) or an aggregate."""

    name: str  # the output column's name
    kind: str  # "column", "bucket", "min", "max", "count", "first", "last"
    column: object | None  # the table's Column (None for count(*))
    stride: int = 0  # date_bin: bucket width and origin, microseconds
    origin: int = 0
    node: exp.Expression | None = None  # the projected expression, to match GROUP BY / ORDER BY
    time: object | None = None  # first/last: the Column they order by


@dataclass(frozen=True)
class _Plan:
    """What a statement reads and computes, against one version of its table."""

    items: list[_Item]
    conditions: list  # (column, comparison, value)
    order: list  # (projection index, descending, NULLs first)
    limit: int  # -1: none
    columns: list  # the table's columns read (with `series`: its key columns and time first)
    series: int  # ColumnCache.chunks' series (0: all rows)
    row_filter: object  # the pyiceberg filter that prunes files and chunks


def answer(session: "Session", tree: exp.Expression, memo: list | None = None) -> pa.Table | None:
    """The result of `tree` (after the engine's rewrites) when it qualifies; else None.
    `memo`: a list kept with a tree that is run again (TextPlans), which then holds the
    analysis of the tree against the table's latest version."""
    source = stored_table(tree, _CLAUSES)
    if source is None or tree.args.get("group") is None or not all(
            _may_serve(p.this if type(p) is exp.Alias else p) for p in tree.expressions):
        return None
    node, alias = source
    if not readable(session, node):
        return None
    from omnilake.engine import query
    try:
        ref, snapshot_id, pending = query.table_rows(session, node)
    except Exception:  # noqa: BLE001 - the general path reports it
        return None
    kept = memo[0] if memo else None  # (one read: threads may share the memo)
    if kept is not None and kept[0] is ref:  # a TableRef is one version of the table
        plan = kept[1]
    else:
        plan = _analyse(tree, node, alias, ref)
        if memo is not None:
            memo[:] = [(ref, plan)]
    if plan is None:
        return None
    rows = _rows(session, ref, snapshot_id, pending, plan)
    if rows is None:
        return None
    return _compute(rows, plan.items, plan.conditions, plan.order, plan.limit)


def _analyse(tree: exp.Expression, node: exp.Table, alias: str, ref) -> _Plan | None:
    from omnilake.engine import query
    by_name = {c.name: c for c in ref.columns()}
    group = tree.args["group"]
    if any(value for key, value in group.args.items() if key != "expressions"):
        return None  # ROLLUP, CUBE, GROUPING SETS, ALL
    items = _items(tree.expressions, alias, by_name)
    if items is None or not _grouped(group.expressions, items):
        return None
    conditions = _conditions(tree.args.get("where"), alias, by_name)
    order = _order(tree.args.get("order"), items)
    limit = _limit(tree.args.get("limit"))
    if conditions is None or order is None or limit is None:
        return None
    series = _series(ref, items, conditions, by_name)
    columns = list({c.name: c for c in (series or []) +
                    [i.column for i in items if i.column is not None] +
                    [i.time for i in items if i.time is not None] +
                    [c for c, _, _ in conditions]}.values())
    if not columns:
        return None
    return _Plan(items, conditions, order, limit, columns, len(series) - 1 if series else 0,
                 query._pruning_filter(node, ref))


# -- statements kept by their text ---------------------------------------------------------
# What a statement kept by its text may hold: its rewrites then depend on the text alone, not
# on the session (no cast, no parameter, no function but time_bucket or date_bin).
_TEXT_NODES = frozenset({
    exp.Select, exp.From, exp.Table, exp.TableAlias, exp.Identifier, exp.Column, exp.Alias,
    exp.Literal, exp.Neg, exp.Paren, exp.Interval, exp.Var, exp.Min, exp.Max, exp.Count,
    exp.Star, exp.First, exp.Last, exp.Anonymous, exp.Where, exp.And, exp.EQ, exp.NEQ, exp.LT,
    exp.LTE, exp.GT, exp.GTE, exp.Group, exp.Order, exp.Ordered, exp.Limit})
_GROUP = re.compile(r"group", re.I)
# names PostgreSQL reads as values (the wire server's catalog rewrites them per session)
_SPECIAL_NAMES = frozenset({"current_user", "session_user", "user", "current_role",
                            "current_catalog"})


def plannable(tree: exp.Expression) -> bool:
    """Whether a parsed statement is a GROUP BY that may be kept prepared by its text."""
    if type(tree) is not exp.Select or tree.args.get("group") is None:
        return False
    for node in nodes(tree):
        kind = type(node)
        if kind not in _TEXT_NODES or (
                kind is exp.Anonymous and node.name.lower() not in ("time_bucket", "date_bin")) or (
                kind is exp.Column and node.name.lower() in _SPECIAL_NAMES):
            return False
    return True


class TextPlans:
    """Small GROUP BY statement texts, each with its tree as the engine prepares it (rewrites
    and the front ends' own), so that a dashboard's statement run again is neither copied nor
    rewritten (~0.5 ms), and its analysis is kept with it (see answer). Per engine, as the
    front ends' rewrites are; bounded, least recently used first out."""

    def __init__(self, size: int = 256):
        self.size = size
        self._plans: OrderedDict[tuple, tuple | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: "Session", sql: str) -> tuple | None:
        """(prepared tree, memo) for the text, or None when it is not kept (anything but one
        plannable statement). The tree is shared: read it, or copy it."""
        if not _GROUP.search(sql):
            return None  # (no GROUP BY: not parsed, copied or remembered here)
        key = (sql, session.dialect, len(session.engine.rewriters))
        with self._lock:
            found = self._plans.get(key, self)
            if found is not self:
                self._plans.move_to_end(key)
                return found
        found = None
        try:
            trees = session.parsed(sql)  # (the cached parse: copied only when kept)
            if len(trees) == 1 and plannable(trees[0]):
                prepared = session.prepare(trees[0].copy())
                found = (prepared, []) if type(prepared) is exp.Select else None
        except E.Error:
            pass  # the general path reports it
        with self._lock:
            self._plans[key] = found
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        return found


# -- reading the statement ---------------------------------------------------------------
def _may_serve(node: exp.Expression) -> bool:
    """A projection of a kind served here (checked before the table is looked up: most
    GROUP BY statements that are not served are told apart by their functions alone)."""
    return type(node) in (exp.Column, exp.Min, exp.Max, exp.Count, exp.Filter) or (
        type(node) is exp.Anonymous and node.name.lower() == "date_bin")


def _items(projections: list, alias: str, by_name: dict) -> list[_Item] | None:
    items = []
    for projection in projections:
        name = None
        if type(projection) is exp.Alias:
            name, projection = projection.alias, projection.this
        item = _item(projection, alias, by_name, name)
        if item is None:
            return None
        items.append(item)
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        return None  # (DataFusion renames twins)
    if any(i.name in by_name and (i.kind != "column" or i.column.name != i.name) for i in items):
        return None  # an alias that is also a column: GROUP BY and ORDER BY read it differently
    return items


def _item(node: exp.Expression, alias: str, by_name: dict, name: str | None) -> _Item | None:
    ref = column_ref(node)
    if ref is not None:
        column = resolve(alias, by_name, *ref)
        if column is None or not _groupable(column):
            return None
        return _Item(name or column.name, "column", column, node=node)
    kind = _AGGREGATES.get(type(node))
    if kind is not None:
        argument = node.this
        if kind == "count" and type(argument) is exp.Star:
            return _Item(name or "count", "count", None, node=node)
        ref = column_ref(argument) if argument is not None else None
        column = resolve(alias, by_name, *ref) if ref is not None else None
        if column is None or node.args.get("distinct") or not _aggregable(column):
            return None
        return _Item(name or kind, kind, column, node=node)
    if type(node) is exp.Anonymous and node.name.lower() == "date_bin" and len(node.expressions) == 3:
        width, value, origin = node.expressions
        ref = column_ref(value)
        column = resolve(alias, by_name, *ref) if ref is not None else None
        stride = _stride(width)
        start = _timestamp(origin.this) if type(origin) is exp.Literal and origin.is_string else None
        if column is None or column.sql_type.name not in _TIME_TYPES or not stride or start is None:
            return None
        return _Item(name or "date_bin", "bucket", column, stride, start, node)
    if type(node) is exp.Filter and name is not None:
        return _first_last(node, alias, by_name, name)
    return None


def _first_last(node: exp.Filter, alias: str, by_name: dict, name: str) -> _Item | None:
    """first(v, t) / last(v, t) as engine/timeseries.py writes them:
    `first_value(v ORDER BY t ASC | DESC) FILTER (WHERE t IS NOT NULL)`."""
    call, where = node.this, node.expression
    if type(call) is not exp.FirstValue or type(call.this) is not exp.Order or \
            len(call.this.expressions) != 1 or type(where) is not exp.Where:
        return None
    ordered, test = call.this.expressions[0], where.this
    value_ref, time_ref = column_ref(call.this.this), column_ref(ordered.this)
    if value_ref is None or time_ref is None or type(test) is not exp.Is or \
            not test.args.get("negate") or type(test.expression) is not exp.Null or \
            column_ref(test.this) != time_ref:
        return None
    value, time = resolve(alias, by_name, *value_ref), resolve(alias, by_name, *time_ref)
    if value is None or time is None or not _aggregable(value) or \
            time.sql_type.name not in _INTEGER_TYPES + _TIME_TYPES:
        return None
    return _Item(name, "last" if ordered.args.get("desc") else "first", value, node=node,
                 time=time)


def _groupable(column) -> bool:
    return column.sql_type.name in _INTEGER_TYPES + _TEXT_TYPES + _TIME_TYPES + ("date",)


def _aggregable(column) -> bool:
    return column.sql_type.name in _INTEGER_TYPES + _FLOAT_TYPES + _TEXT_TYPES + _TIME_TYPES


def _stride(width: exp.Expression) -> int | None:
    if type(width) is not exp.Interval or type(width.this) is not exp.Literal or width.unit:
        return None
    match = _MICROSECONDS.match(width.this.this)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _timestamp(text: str) -> int | None:
    """Microseconds since the epoch of an ISO timestamp (UTC unless it says otherwise), as
    DataFusion reads a string compared with a timestamp in a UTC session; None if in doubt."""
    if not _ISO_TIMESTAMP.match(text):
        return None  # (Python reads forms DataFusion does not, and the reverse)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _position(node: exp.Expression, items: list[_Item]) -> int | None:
    """The projection a GROUP BY or ORDER BY entry names: by position, output name or the
    same expression."""
    if type(node) is exp.Literal and not node.is_string:
        try:
            number = int(node.this)
        except ValueError:
            return None
        return number - 1 if 1 <= number <= len(items) else None
    ref = column_ref(node)
    if ref is not None and ref[0] is None:
        named = [k for k, i in enumerate(items) if i.name == ref[1]]
        if len(named) == 1:
            return named[0]
    same = [k for k, i in enumerate(items) if i.node == node]  # (structural equality)
    return same[0] if len(same) == 1 else None


def _grouped(entries: list, items: list[_Item]) -> bool:
    """Whether the GROUP BY is exactly the non-aggregate projections."""
    keys = {k for k, i in enumerate(items) if i.kind in ("column", "bucket")}
    found = {_position(entry, items) for entry in entries}
    return bool(keys) and found == keys


def _conditions(where, alias: str, by_name: dict) -> list | None:
    """(column, comparison, value) per AND-ed condition; None if one does not qualify."""
    if where is None:
        return []
    conjuncts, pending = [], [where.this]
    while pending:
        node = pending.pop()
        if type(node) is exp.And:
            pending += [node.this, node.expression]
            continue
        compare = _COMPARISONS.get(type(node))
        ref = column_ref(node.this) if compare is not None else None
        column = resolve(alias, by_name, *ref) if ref is not None else None
        value = _value(node.expression, column) if column is not None else None
        if value is None:
            return None
        conjuncts.append((column, compare, value))
    return conjuncts


def _value(node: exp.Expression, column):
    """The literal as a Python value of the column's kind, when the comparison is plain."""
    negative = type(node) is exp.Neg
    literal = node.this if negative else node
    if type(literal) is not exp.Literal:
        return None
    kind = column.sql_type.name
    if literal.is_string:
        if negative:
            return None
        if kind in _TEXT_TYPES:
            return literal.this
        if kind == "timestamptz":  # microseconds: a scalar of the column's type when compared
            return _timestamp(literal.this)
        return None
    text = ("-" if negative else "") + literal.this
    if kind in _INTEGER_TYPES and re.fullmatch(r"-?\d+", text):
        number = int(text)
        return number if -(1 << 63) <= number < (1 << 63) else None
    if kind == "double precision":  # (a REAL column against a literal: which side is cast?)
        try:
            number = float(text)
        except ValueError:
            return None
        return number if np.isfinite(number) else None
    return None


def _order(order, items: list[_Item]) -> list | None:
    """(projection index, descending, NULLs first) per ORDER BY entry, or None."""
    if order is None:
        return []
    keys = []
    for entry in order.expressions:
        position = _position(entry.this, items)
        if position is None:
            return None
        desc = bool(entry.args.get("desc"))
        nulls_first = entry.args.get("nulls_first")
        keys.append((position, desc, desc if nulls_first is None else bool(nulls_first)))
    return keys


def _series(ref, items: list[_Item], conditions: list, by_name: dict) -> list | None:
    """[key columns..., time] when the statement needs only the earliest and latest row of
    each run of equal keys (ColumnCache.chunks' series edges): it groups by tags and filters
    on tags (of a table sorted by tags, then time: a time series), and its aggregates are min
    and max of the time or first and last by it. None otherwise. Whether time never
    decreases within a run is for the cache to check, file by file."""
    fields = ref.table.sort_order().fields
    schema = ref.table.schema()
    if len(fields) < 2 or any(str(f.transform) != "identity" for f in fields):
        return None
    names = [schema.find_column_name(f.source_id) for f in fields]
    tags, time = set(names[:-1]), by_name.get(names[-1])
    keys = {}
    for item in items:
        if item.kind == "column":
            keys[item.column.name] = item.column
        elif item.kind in ("min", "max"):
            if item.column.name != names[-1]:
                return None
        elif item.kind not in ("first", "last") or item.time.name != names[-1]:
            return None
    keys.update((column.name, column) for column, _, _ in conditions)
    if time is None or time.sql_type.name not in _INTEGER_TYPES + _TIME_TYPES or \
            not keys.keys() <= tags:
        return None
    return [*keys.values(), time]


def _limit(limit) -> int | None:
    if limit is None:
        return -1
    value = limit.expression
    if type(value) is not exp.Literal or value.is_string:
        return None
    try:
        number = int(value.this)
    except ValueError:
        return None
    return number if number >= 0 else None


# -- reading the rows --------------------------------------------------------------------
def _rows(session: "Session", ref, snapshot_id, pending, plan: _Plan) -> pa.Table | None:
    """The table's candidate rows (chunks the zone maps keep, memtable rows) in the plan's
    columns; with its `series`, the files' series edges (see ColumnCache.chunks), where text
    comes as large_string."""
    from omnilake.engine import query
    from omnilake.engine.scan import engine_schema, pending_in_scan_types
    columns, series = plan.columns, plan.series
    parts = cached_chunks(session, ref, snapshot_id, columns, plan.row_filter, series=series)
    if parts is None:
        return None
    if pending:
        rows = pending_in_scan_types(query.scan_ready_rows(pending, columns), columns)
        parts.append([rows.column(c.name).chunks for c in columns])
    if sum(len(chunk) for chunks in parts for chunk in chunks[0]) > MAX_ROWS:
        return None
    schema = engine_schema(columns)
    arrays = []
    for k, field in enumerate(schema):
        kind = pa.large_string() if series and pa.types.is_string_view(field.type) else field.type
        arrays.append(pa.chunked_array([chunk if chunk.type == kind else chunk.cast(kind)
                                        for chunks in parts for chunk in chunks[k]], type=kind))
    return pa.Table.from_arrays(arrays, names=schema.names)


# -- computing ---------------------------------------------------------------------------
def _compute(rows: pa.Table, items: list[_Item], conditions: list, order: list,
             limit: int) -> pa.Table | None:
    from omnilake.engine.query import normalise_output
    mask = None
    for column, compare, value in conditions:
        values = rows.column(column.name)
        try:
            scalar = pa.scalar(value, values.type)
        except (OverflowError, pa.ArrowInvalid):
            return None  # `smallint_column = 100000`: DataFusion widens, so let it
        test = pc.fill_null(compare(values, scalar), False)
        mask = test if mask is None else pc.and_(mask, test)
    if any(i.kind == "column" and i.column.sql_type.name in _TEXT_TYPES for i in items):
        left = rows.num_rows if mask is None else pc.sum(mask).as_py() or 0
        if left > TEXT_KEY_ROWS:
            return None  # Arrow's hash grouping of strings: slower than DataFusion from here
    # Text is held as string_view, which Arrow's filter and take do not take yet: the text
    # columns read past the filter become large_string (what results carry anyway).
    used = {c.name for i in items for c in (i.column, i.time) if c is not None}
    rows = pa.table({name: column.cast(pa.large_string())
                     if pa.types.is_string_view(column.type) else column
                     for name, column in zip(rows.column_names, rows.columns) if name in used})
    if mask is not None:
        rows = rows.filter(mask)
    times = {i.time.name for i in items if i.time is not None}
    if times:  # Arrow's first/last take each group's first/last row in input order
        if len(times) > 1 or rows.column(next(iter(times))).null_count:
            return None  # (rows without a time are left out of first/last only)
        time = rows.column(next(iter(times))).cast(pa.int64()).to_numpy()
        rows = rows.take(np.argsort(time, kind="stable"))
    inputs: dict[str, pa.ChunkedArray] = {}
    aggregations = []  # (input, function, options)
    for k, item in enumerate(items):
        if item.kind == "column":
            inputs[f"k{k}"] = rows.column(item.column.name)
        elif item.kind == "bucket":
            bins = _bins(rows.column(item.column.name), item.stride, item.origin)
            if bins is None:
                return None
            inputs[f"k{k}"] = bins
        elif item.column is None:  # count(*)
            aggregations.append(([], "count_all", None))
        else:
            values = rows.column(item.column.name)
            if pa.types.is_floating(values.type) and item.kind in ("min", "max") and \
                    pc.any(pc.is_nan(values)).as_py():
                return None
            inputs[f"v{k}"] = values
            options = pc.CountOptions("only_valid") if item.kind == "count" else \
                pc.ScalarAggregateOptions(skip_nulls=False) if item.time is not None else None
            aggregations.append((f"v{k}", item.kind, options))
    keys = [f"k{k}" for k, i in enumerate(items) if i.kind in ("column", "bucket")]
    grouped = pa.table(inputs).group_by(keys, use_threads=False).aggregate(
        [(target, function, options) if options is not None else (target, function)
         for target, function, options in aggregations])
    # Arrow names the outputs after the keys and "<input>_<function>" ("count_all").
    arrays = [grouped.column(f"k{k}") if i.kind in ("column", "bucket") else
              grouped.column("count_all" if i.kind == "count" and i.column is None else
                             f"v{k}_{i.kind}") for k, i in enumerate(items)]
    fields = [_field(item, array.type) for item, array in zip(items, arrays)]
    result = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    if order:
        if any(result.column(items[k].name).null_count for k, _, _ in order):
            if not _PER_KEY_NULLS:
                return None
            keys = [(items[k].name, "descending" if desc else "ascending",
                     "at_start" if first else "at_end") for k, desc, first in order]
        else:
            keys = [(items[k].name, "descending" if desc else "ascending") for k, desc, _ in order]
        result = result.take(pc.sort_indices(result, sort_keys=keys))
    if limit >= 0:
        result = result.slice(0, limit)
    return normalise_output(result.combine_chunks())


def _bins(times: pa.ChunkedArray, stride: int, origin: int) -> pa.Array | None:
    """date_bin: each time floored to origin + a multiple of stride (microseconds)."""
    array = times.combine_chunks() if times.num_chunks != 1 else times.chunk(0)
    values = array.cast(pa.int64()).to_numpy(zero_copy_only=False) if array.null_count == 0 \
        else pc.fill_null(array.cast(pa.int64()), origin).to_numpy()
    if len(values) and (values.min() < -_NS_RANGE_US or values.max() > _NS_RANGE_US):
        return None  # DataFusion's nanoseconds would overflow: let it say so
    binned = (values - origin) // stride * stride + origin  # floor, as date_bin
    return pa.array(binned, type=array.type, mask=pc.is_null(array).to_numpy(
        zero_copy_only=False) if array.null_count else None)


def _field(item: _Item, type_: pa.DataType) -> pa.Field:
    """The output field as DataFusion gives it: a grouped column keeps its SQL type's
    metadata, a count is never NULL."""
    from omnilake.engine.scan import column_metadata
    if item.kind in ("column", "first", "last"):
        return pa.field(item.name, type_, metadata=column_metadata(item.column))
    return pa.field(item.name, type_, nullable=item.kind != "count")
