"""Key lookups answered from the column cache, without DataFusion.

`SELECT a, b FROM t WHERE id = 42` is the statement applications repeat most, and through
DataFusion it costs ~0.6 ms of planning and execution for a handful of rows (in process
~1.4 ms in all, where PostgreSQL answers over a socket in 0.15 ms). Here such a statement
is answered from the decoded columns the column cache already holds: file and chunk bounds
pick the chunks that may hold the key, NumPy/Arrow compare the key columns, and the matching
rows are sliced out; the memtable's rows are compared the same way. `plan()` works the lookup
out from the statement's text, placeholders included, so a statement text run again (DB-API)
or a prepared wire statement skips copying, binding and rewriting its tree; `answer()` serves
a bound statement that reached the general path.

What qualifies: one stored table (no join, CTE, table function, time travel, system or
registered table), projections that are plain columns (or `*`), with or without an alias, and
a WHERE that is `column = literal` or an AND of those, each an integer column against an
integer or a text column against a string. Anything else, a data file the cache does not hold
(or one with delete files), or more than MAX_MATCHES matching rows, returns None and the
statement runs through DataFusion as before; so a lookup is only ever a faster way to the
same rows, names and types (tests/test_key_lookup.py compares the two).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, EqualTo
from sqlglot import exp

from omnilake import errors as E
from omnilake.engine import key_index, params
from omnilake.engine.tables import ident
from omnilake.storage import memory_only

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

_EVERY_ROW = AlwaysTrue()  # (a pydantic singleton: ~5 us to make each time)
MAX_MATCHES = 256  # rows sliced out one by one; a wider match is DataFusion's work
LOOP_INDEX_ROWS = 8192  # a batch indexed where the statement may not wait (argsort ~0.3 ms)
_INTEGER_TYPES = ("smallint", "integer", "bigint")
_TEXT_TYPES = ("text", "varchar")
_CLAUSES = frozenset({"expressions", "from_", "where"})


@dataclass(frozen=True)
class Param:
    """A value taken from the statement's parameters (0-based)."""

    index: int


@dataclass(frozen=True)
class Lookup:
    """What a key-lookup statement reads, worked out from its text alone, so a prepared
    statement (or a DB-API statement text run again) skips parsing, binding and rewriting.
    Names are resolved against the table's columns each run (a column may be renamed)."""

    table: exp.Table  # the FROM entry (read only)
    alias: str
    projections: tuple  # (output name or None, qualifier or None, column name); None: `*`
    conditions: tuple  # (qualifier or None, column name, value or Param)
    positional: int  # `%s` placeholders: the parameters must be exactly these


def answer(session: "Session", tree: exp.Expression) -> pa.Table | None:
    """The result of `tree`, when it is a key lookup the cache can answer; else None."""
    found = plan(tree)
    return None if found is None else run(session, found, ())


def plan(tree: exp.Expression) -> Lookup | None:
    """The lookup `tree` is, or None (see the module's comment). Reads `tree` only."""
    source = stored_table(tree, _CLAUSES)
    where = tree.args.get("where") if source is not None else None
    if where is None:
        return None
    node, alias = source
    numbers = parameter_numbers(tree)
    projections = plain_projections(tree.expressions)
    if numbers is None or projections is None:
        return None
    conditions = []
    for condition in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        if type(condition) is not exp.EQ:
            return None
        left, right = condition.this, condition.expression
        if type(left) is not exp.Column:
            left, right = right, left
        column = column_ref(left)
        value = Param(numbers[id(right)]) if id(right) in numbers else _literal(right)
        if column is None or value is None:
            return None
        conditions.append((*column, value))
    positional = sum(1 for n in params.placeholders(tree) if params.parameter_key(n) is None)
    return Lookup(node, alias, projections, tuple(conditions), positional)


def run(session: "Session", lookup: Lookup, values) -> pa.Table | None:
    """The lookup's rows with `values` for its parameters; None where it must run through
    DataFusion (or the general path should report an error)."""
    from omnilake.engine import query
    node = lookup.table
    if not readable(session, node):
        return None
    if lookup.positional and len(values) != lookup.positional:
        return None
    try:
        ref, snapshot_id, pending = query.table_rows(session, node)
    except E.UndefinedTable:
        return None  # the general path reports it
    layout = _LAYOUTS.get(lookup, ref)
    keys = None if layout is None else _keys(lookup, layout.keys, values)
    if keys is None:
        return None
    columns, position = layout.columns, layout.position
    parts = _file_parts(session, ref, snapshot_id, columns, keys)
    if parts is None:
        return None
    files = len(parts)  # parts below this are data files' (their chunks get key indexes)
    scanned = 0  # rows compared one by one (bounded where the statement may not wait)
    if pending:  # already in the scan's types and columns (kept while the memtable is unchanged)
        memory_only.check(sum(t.num_rows for t in pending) <= memory_only.MAX_ROWS,
                          "a large memtable")
        rows = query.scan_ready_rows(pending, columns)[0]
        parts.append([rows.column(c.name).chunks for c in columns])
    key_positions = [position[c.name] for c, _ in keys]
    key_values = [v for _, v in keys]
    picked: list[list[pa.Array]] = [[] for _ in columns]
    matches = 0
    for part, chunked in enumerate(parts):
        for n in range(len(chunked[0]) if chunked else 0):
            compared = [chunked[i][n] for i in key_positions]
            hits = _indexed(compared, key_values) if part < files else None
            if hits is None:
                scanned += len(compared[0])
                memory_only.check(scanned <= memory_only.MAX_ROWS, "a large unindexed chunk")
                hits = _matches(compared, key_values)
            matches += len(hits)
            if matches > MAX_MATCHES:
                return None
            if len(hits):
                for i, column in enumerate(chunked):
                    picked[i].extend(column[n].slice(int(h), 1) for h in hits)
    arrays = []
    for i, field in zip(layout.outputs, layout.schema):
        arrays.append(_converted(_concat(picked[i], layout.scan_types[i]), field.type))
    return pa.Table.from_arrays(arrays, schema=layout.schema)


@dataclass(frozen=True)
class _Layout:
    """What a lookup reads from one version of its table, worked out from names once."""

    keys: tuple  # the column each condition compares
    columns: list  # the columns read: the outputs', then the keys'
    position: dict  # column name -> index in `columns`
    scan_types: list  # Arrow type of each of `columns` in the column cache
    outputs: list  # index in `columns` of each result column
    schema: pa.Schema  # the result's (as normalise_output gives it)


class _Layouts:
    """Layouts by (lookup, table version), least recently used out first. A loaded table
    (TableRef) is one object for as long as its metadata is unchanged, so a new schema or
    column rename gets a new layout. The table is held weakly: an entry never keeps an old
    version's metadata alive."""

    def __init__(self, size: int = 256):
        self.size = size
        self._entries: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, lookup: Lookup, ref) -> _Layout | None:
        key = (id(lookup), id(ref))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is lookup and entry[1]() is ref:
                self._entries.move_to_end(key)
                return entry[2]
        layout = _layout(lookup, ref)
        with self._lock:  # (the entry holds the lookup, so its id is not reused)
            self._entries[key] = (lookup, weakref.ref(ref), layout)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return layout


_LAYOUTS = _Layouts()


def _layout(lookup: Lookup, ref) -> _Layout | None:
    """None where a name does not resolve (the general path reports it) or the result needs
    the general path's conversions (see output_columns)."""
    from omnilake.engine.query import output_field
    from omnilake.engine.scan import engine_schema
    by_name = {c.name: c for c in ref.columns()}
    outputs = output_columns(lookup.projections, lookup.alias, by_name, ref)
    keys = tuple(resolve(lookup.alias, by_name, qualifier, name)
                 for qualifier, name, _ in lookup.conditions)
    if outputs is None or None in keys:
        return None
    columns = list({c.name: c for c in [c for _, c in outputs] + list(keys)}.values())
    position = {c.name: i for i, c in enumerate(columns)}
    fields = engine_schema(columns)
    schema = pa.schema([output_field(fields.field(position[c.name]).with_name(out), None, None)
                        for out, c in outputs])
    return _Layout(keys, columns, position, list(fields.types),
                   [position[c.name] for _, c in outputs], schema)


def parameter_numbers(tree: exp.Expression) -> dict[int, int] | None:
    """Each placeholder node's parameter (by the node's id), numbered as params.bind takes
    them; None for named parameters."""
    numbers, positional = {}, 0
    for node in params.placeholders(tree):
        key = params.parameter_key(node)
        if isinstance(key, str):
            return None
        numbers[id(node)] = positional if key is None else key - 1
        positional += key is None
    return numbers


def stored_table(tree: exp.Expression, clauses: frozenset) -> tuple[exp.Table, str] | None:
    """(the FROM entry, the name it goes by) of a SELECT with no clause but `clauses`, from
    one plain table name (no function, time travel or column aliases); else None."""
    if type(tree) is not exp.Select or any(
            value for key, value in tree.args.items() if key not in clauses):
        return None
    source = tree.args.get("from_")
    node = source.this if source is not None else None
    if type(node) is not exp.Table or not isinstance(node.this, exp.Identifier) or any(
            value for key, value in node.args.items() if key not in ("this", "db", "alias")):
        return None
    alias = node.args.get("alias")
    if alias is not None and alias.args.get("columns"):
        return None
    return node, ident(alias.this) if alias is not None else ident(node.this)


def readable(session: "Session", node: exp.Table) -> bool:
    """Whether `node` names a stored table (not a registered, system or catalog table)."""
    from omnilake.engine import query
    name, namespace = ident(node.this), ident(node.args.get("db"))
    return not ((namespace is None and name in session.registered)
                or namespace in query.VIRTUAL_SCHEMAS
                or query.virtual_builder(session, namespace, name) is not None)


def plain_projections(expressions: list[exp.Expression]) -> tuple | None:
    """(output name or None, qualifier or None, column name) per projection, None for `*`;
    None unless every projection is a plain column, aliased or not, or `*`."""
    projections = []
    for projection in expressions:
        if type(projection) is exp.Star:
            projections.append(None)
            continue
        name = None
        if type(projection) is exp.Alias:
            name, projection = projection.alias, projection.this
        column = column_ref(projection)
        if column is None:
            return None
        projections.append((name, *column))
    return tuple(projections)


def column_ref(node: exp.Expression) -> tuple[str | None, str] | None:
    """(qualifier, name) of a plain column reference, or None."""
    if type(node) is not exp.Column or node.args.get("db") is not None \
            or not isinstance(node.this, exp.Identifier):
        return None
    return ident(node.args.get("table")), ident(node.this)


def _literal(node: exp.Expression) -> int | str | None:
    negative = type(node) is exp.Neg
    if negative:
        node = node.this
    if type(node) is not exp.Literal:
        return None
    if node.is_string:
        return None if negative else node.this
    try:
        number = int(node.this)
    except ValueError:
        return None  # a decimal or an exponent: not a key
    return -number if negative else number


def resolve(alias: str, by_name: dict, qualifier: str | None, name: str):
    """The table's column a reference names, or None (another qualifier, or no such column)."""
    if qualifier is not None and qualifier != alias:
        return None
    return by_name.get(name)


def output_columns(projections: tuple, alias: str, by_name: dict, ref) -> list | None:
    """(output name, column) per result column of plain column `projections` (see Lookup),
    or None (no such column, a vector or blob column, or a repeated name)."""
    outputs = []
    for projection in projections:
        if projection is None:
            if any(c.sql_type.name == "blob" for c in ref.columns()):
                return None  # (a BLOB reaches clients through the general path's conversion)
            outputs.extend((c.name, c) for c in ref.columns())
            continue
        name, qualifier, column_name = projection
        column = resolve(alias, by_name, qualifier, column_name)
        if column is None or column.sql_type.name in ("vector", "blob"):
            return None
        outputs.append((name or column.name, column))
    names = [name for name, _ in outputs]
    return outputs if len(set(names)) == len(names) else None  # (DataFusion renames twins)


def _keys(lookup: Lookup, columns: tuple, values) -> list | None:
    """(column, value) per condition (`columns`: the column each compares), where the
    value's type is the column's; else None."""
    keys = []
    for (_, _, value), column in zip(lookup.conditions, columns):
        if isinstance(value, Param):
            if value.index >= len(values):
                return None
            value = values[value.index]
        kind = column.sql_type.name
        integer = type(value) is int and -(1 << 63) <= value < (1 << 63)
        if not ((kind in _INTEGER_TYPES and integer)
                or (kind in _TEXT_TYPES and type(value) is str)):
            return None
        keys.append((column, value))
    return keys


def _file_parts(session: "Session", ref, snapshot_id, columns, keys) -> list | None:
    """Per data file that may hold a match, its chunks per column (from the column cache),
    or None when a file is not held there or has deletes. Integer keys pick files and chunks
    by their bounds here (a new key value each statement would miss the plan cache and the
    zone maps' memory of filters); text keys by an Iceberg filter, as a scan does."""
    position = {c.name: i for i, c in enumerate(columns)}
    ranges = {position[c.name]: value for c, value in keys if isinstance(value, int)}
    texts = [EqualTo(c.name, value) for c, value in keys if isinstance(value, str)]
    row_filter = And(*texts) if len(texts) > 1 else texts[0] if texts else _EVERY_ROW
    integers = [(c.field_id, value) for c, value in keys if isinstance(value, int)]
    return cached_chunks(session, ref, snapshot_id, columns, row_filter, ranges,
                         lambda data_file: all(_may_hold(data_file, field_id, value)
                                               for field_id, value in integers))


def cached_chunks(session: "Session", ref, snapshot_id, columns, row_filter,
                  ranges: dict | None = None, admit=None, series: int = 0) -> list | None:
    """Per data file of the snapshot that `row_filter` (and `admit`, a test of the DataFile)
    keeps, its chunks per column from the column cache: those the zone maps and the integer
    `ranges` keep, cut to series edges with `series` (see ColumnCache.chunks). None when a
    file is not held there or has delete files (or NaN statistics), or is not in series
    order: the caller's statement then runs through DataFusion."""
    if snapshot_id is None:
        return []
    from omnilake.engine.scan import _has_nan, describe_filter
    from omnilake.engine.zone_maps import chunk_filter
    engine = session.engine
    keep = None if isinstance(row_filter, AlwaysTrue) else chunk_filter(
        ref.table.schema(), row_filter, describe_filter(row_filter))
    parts = []
    tasks = engine.plan_cache.plan(ref.table, snapshot_id, row_filter)[0]
    memory_only.check(len(tasks) <= memory_only.MAX_FILES, "many data files")
    for task in tasks:
        if admit is not None and not admit(task.file):
            continue
        if task.delete_files or _has_nan(task, ref.table.io):
            return None
        chunks = engine.column_cache.chunks(task.file.file_path, columns, keep, ranges, series)
        if chunks is None:
            return None
        parts.append(chunks)
    return parts


def _may_hold(data_file, field_id: int, value: int) -> bool:
    """Whether an integer column's bounds in a data file's metrics admit `value` (Iceberg
    keeps int and long bounds as little-endian two's complement, never truncated)."""
    low = (data_file.lower_bounds or {}).get(field_id)
    high = (data_file.upper_bounds or {}).get(field_id)
    if low is not None and value < int.from_bytes(low, "little", signed=True):
        return False
    return high is None or value <= int.from_bytes(high, "little", signed=True)


def _indexed(arrays: list[pa.Array], values: list) -> np.ndarray | None:
    """Positions where every array equals its value, found through the first's index in
    KEY_INDEXES (a data file's integer chunk); None where it has none (yet). Where the
    statement may not wait, only a chunk of at most LOOP_INDEX_ROWS gets one built."""
    first, value = arrays[0], values[0]
    if len(first) < key_index.MIN_ROWS or not pa.types.is_integer(first.type) \
            or first.null_count or not _fits(value, first.type):
        return None
    build = len(first) <= LOOP_INDEX_ROWS or not memory_only.active()
    hits = key_index.KEY_INDEXES.positions(first, value, build=build)
    if hits is not None:
        for array, value in zip(arrays[1:], values[1:]):  # the other keys, at those rows
            if len(hits):
                hits = hits[_equal(array.take(hits), value)]
    return hits


def _matches(arrays: list[pa.Array], values: list) -> np.ndarray:
    """Positions where every array equals its value (NULL never does)."""
    found = None
    for array, value in zip(arrays, values):
        equal = _equal(array, value)
        found = equal if found is None else found & equal
    return np.flatnonzero(found)


def _equal(array: pa.Array, value) -> np.ndarray:
    """Where `array` equals `value`, as booleans (NULL: False)."""
    integer = pa.types.is_integer(array.type)
    if integer and not _fits(value, array.type):
        return np.zeros(len(array), dtype=bool)  # `smallint_column = 100000`
    if integer and array.null_count == 0:
        return array.to_numpy() == value
    scalar = pa.scalar(value, type=array.type)
    return pc.fill_null(pc.equal(array, scalar), False).to_numpy(zero_copy_only=False)


def _fits(value: int, type_: pa.DataType) -> bool:
    low, high = _bounds(type_)
    return low <= value <= high


@functools.lru_cache(maxsize=None)
def _bounds(type_: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(type_.to_pandas_dtype())
    return int(info.min), int(info.max)


def _converted(array: pa.Array, type_: pa.DataType) -> pa.Array:
    """`array` in the result's type. A few strings go through Python: a cast from a view
    type costs ~15 us whatever the length."""
    if array.type == type_:
        return array
    if len(array) <= 16 and (pa.types.is_string_view(array.type)
                             or pa.types.is_binary_view(array.type)):
        return pa.array(array.to_pylist(), type=type_)
    return array.cast(type_, safe=False)


def _concat(pieces: list[pa.Array], type_: pa.DataType) -> pa.Array:
    return pa.concat_arrays(pieces) if pieces else pa.array([], type=type_)
