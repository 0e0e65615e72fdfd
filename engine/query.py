"""Running a query: resolve its tables, push filters down, hand it to DataFusion.

All statements share the engine's DataFusion SessionContext, so its caches of Parquet
footers and file statistics live across statements (a context per statement made a point
query 1.7x slower). Every table a statement names is registered under a name private to that
statement, with the user's name kept as the alias so `t.col` still resolves, and is
deregistered when the statement finishes. Iceberg tables are scanned at the snapshot current when
the statement started, or the one named by `FOR VERSION AS OF` / `FOR TIMESTAMP AS OF`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
from datafusion import SessionConfig, SessionContext
from pyiceberg.expressions import AlwaysTrue
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from omnilake import errors as E
from omnilake.catalog.types import SQL_TYPE_KEY
from omnilake.engine import planning, pushdown, vector_functions
from omnilake.engine.dialect import to_datafusion, to_datafusion_with_values
from omnilake.engine.errors import from_datafusion
from omnilake.engine.planning import SMALL_STATEMENT_ROWS, plan_sql
from omnilake.engine.scan import Column, ScanPlan, pending_in_scan_types, scan
from omnilake.engine.search_result import direct_result
from omnilake.engine.tables import TableRef, ident, load, split_name
from omnilake.engine.walk import nodes
from omnilake.storage import memory_only

if TYPE_CHECKING:
    from omnilake.config import Settings
    from omnilake.engine.engine import Session

VIRTUAL_SCHEMAS = ("information_schema",)


_statement_ids = itertools.count()


def batches_of(table: pa.Table) -> list[pa.RecordBatch]:
    """The table's batches; one empty batch for an empty table, so the schema is kept."""
    return table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]


def new_statement_name(kind: str) -> str:
    """A name no other statement uses, for tables registered in the shared context."""
    return f"__ol_s{next(_statement_ids)}_{kind}"


@dataclass
class BoundQuery:
    ctx: SessionContext
    tree: exp.Expression
    prefix: str
    scans: list[ScanPlan] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)  # DataFusion name -> output name
    declared: dict[str, str] = field(default_factory=dict)  # output name -> SQL type
    registered: list[str] = field(default_factory=list)
    direct: pa.Table | None = None  # the result, when no DataFusion run is needed
    rows: int = 0  # the rows its tables hand DataFusion, at most (see SMALL_STATEMENT_ROWS)
    rows_bound_result: bool = False  # no join or the like: at most `rows` rows come out

    def register(self, name: str, data, rows: int | None = None) -> None:
        """Register a DataFrame as a view, or an Arrow table as a table, under `name`.
        `rows`: how many a DataFrame holds at most (unknown: counted as many)."""
        self.registered.append(name)
        if isinstance(data, pa.Table):
            self.rows += data.num_rows
            self.ctx.register_record_batches(name, [batches_of(data)])
        else:
            self.rows += rows if rows is not None else SMALL_STATEMENT_ROWS + 1
            self.ctx.register_view(name, data)

    def sql(self) -> str:
        return to_datafusion(self.tree)

    def frame(self, explain: str = ""):
        """The statement as a DataFusion DataFrame; long number arrays (vectors) travel as
        parameter values, which DataFusion takes without parsing hundreds of literals."""
        sql, values = to_datafusion_with_values(self.tree)  # (spends the tree)
        return plan_sql(self.ctx, explain + sql, values, small=self.rows <= SMALL_STATEMENT_ROWS)

    def to_arrow(self, explain: str = "") -> pa.Table:
        """Execute (optionally under EXPLAIN [ANALYZE]) and release the statement's tables."""
        if self.direct is not None and not explain:
            self.close()
            return self.direct
        try:
            result = self.frame(explain).to_arrow_table()
        except Exception as exc:  # DataFusion raises plain Exceptions
            raise from_datafusion(exc) from exc
        finally:
            self.close()
        return result if explain else normalise_output(result, self.renames, self.declared)

    def stream(self) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Execute, and yield the result's batches as DataFusion produces them, so a large
        result is never held whole. The statement's tables stay registered until the
        iterator is exhausted or closed."""
        if self.direct is not None:
            self.close()
            return self.direct.schema, iter(self.direct.to_batches())
        collect = self.rows_bound_result and self.rows <= SMALL_STATEMENT_ROWS
        try:
            frame = self.frame()
            raw = frame.schema()
            schema = pa.schema([output_field(f, self.renames, self.declared) for f in raw])
            if not collect:
                batches = frame.execute_stream()
        except Exception as exc:  # DataFusion raises plain Exceptions
            self.close()
            raise from_datafusion(exc) from exc
        if collect:
            # At most 64k rows: collected in one call, ~0.4 ms less than pulling batches
            # (a point query: 2.43 against 2.84 ms in process). An error is raised where
            # the rows are read, as from a stream.
            try:
                table = normalise_output(frame.to_arrow_table(), self.renames, self.declared)
            except Exception as exc:  # noqa: BLE001 - raised when the rows are read
                return schema, _failing(from_datafusion(exc))
            finally:
                self.close()
            return schema, iter(table.to_batches())
        # the type each column changes to, or None (the usual case: a batch as planned)
        casts = [None if out.type == f.type else out.type for f, out in zip(raw, schema)]

        def produce() -> Iterator[pa.RecordBatch]:
            try:
                for batch in batches:
                    batch = batch.to_pyarrow()
                    if batch.schema.equals(raw):
                        yield pa.RecordBatch.from_arrays(
                            [c if t is None else c.cast(t, safe=False)
                             for c, t in zip(batch.columns, casts)], schema=schema)
                        continue
                    table = normalise_output(pa.Table.from_batches([batch]),
                                             self.renames, self.declared)
                    yield from table.cast(schema).to_batches()
            except E.Error:
                raise
            except Exception as exc:
                raise from_datafusion(exc) from exc
            finally:
                self.close()
        return schema, produce()

    def close(self) -> None:
        for name in self.registered:
            self.ctx.deregister_table(name)
        self.registered.clear()


def _failing(error: Exception) -> Iterator[pa.RecordBatch]:
    raise error
    yield  # (a generator: the error comes with the first batch asked for)


def new_context(settings: "Settings") -> SessionContext:
    """The engine's DataFusion context: PostgreSQL syntax, UTC; one partition for small
    statements and one per core for larger ones (engine/planning.py)."""
    config = (SessionConfig()
              .with_target_partitions(1)  # large statements: planning.parallel
              .with_batch_size(settings.batch_size)
              .with_information_schema(False)
              .set("datafusion.sql_parser.dialect", "postgresql")
              .set("datafusion.execution.time_zone", "UTC"))
    from omnilake.engine.timeseries import register_functions
    ctx = SessionContext(config)
    planning.adopt(ctx, settings.effective_partitions())
    vector_functions.register(ctx)
    register_functions(ctx)
    return ctx


def bind(session: "Session", tree: exp.Expression, pinned: TableRef | None = None) -> BoundQuery:
    """Register the tables `tree` reads in a fresh context and rewrite their names.

    `pinned` is a table already loaded by the caller (the target of an UPDATE or DELETE), read
    at exactly that snapshot so the rows read and the commit agree.
    """
    from omnilake.engine.embeddings import FUNCTION, rewrite_model_arguments
    found = nodes(tree)  # one walk serves the steps below
    if any(isinstance(n, exp.Anonymous) and n.name.lower() == FUNCTION for n in found):
        tree = rewrite_model_arguments(tree, session.engine.embeddings)
        found = nodes(tree)
    bound = BoundQuery(session.engine.datafusion, tree, new_statement_name(""))
    try:
        _bind_tables(session, bound, pinned, found)
    except BaseException:
        bound.close()
        raise
    vectors = {c.name for s in bound.scans for c in s.columns if c.sql_type.name == "vector"}
    if vectors and any(isinstance(n, tuple(vector_functions._ELEMENTWISE)) for n in found):
        vector_functions.elementwise_operators(tree, vectors)  # (walks for those operators)
    bound.declared = _declared_types(tree)
    bound.renames = _name_outputs(tree)
    bound.rows_bound_result = not any(isinstance(n, _ROW_MULTIPLIERS) or (
        isinstance(n, exp.Table) and not isinstance(n.this, exp.Identifier))  # table functions
        for n in found)
    if len(bound.scans) == 1 and not isinstance(bound.scans[0], ScanPlan):  # a search
        bound.direct = direct_result(bound)
    if bound.direct is None:  # (a direct result needs no DataFusion table)
        for plan in bound.scans:
            if not isinstance(plan, ScanPlan):
                bound.register(plan.private, plan.result)
    return bound


# What can give a query more rows than its tables hold.
_ROW_MULTIPLIERS = (exp.Join, exp.Lateral, exp.Unnest, exp.Explode, exp.Cube, exp.Rollup,
                    exp.GroupingSets, exp.Values, exp.With)


_DECLARED = {exp.DataType.Type.UUID: "uuid", exp.DataType.Type.JSON: "json",
             exp.DataType.Type.JSONB: "json"}


def _declared_types(tree: exp.Expression) -> dict[str, str]:
    """Output columns cast to a type DataFusion carries as text (`x::uuid`, `x::json`): their
    SQL type, so clients get UUIDs and JSON back, not strings."""
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    if not isinstance(select, exp.Select):
        return {}
    declared = {}
    for projection in select.expressions:
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(value, exp.Cast) and isinstance(value.to, exp.DataType) \
                and value.to.this in _DECLARED:
            name = projection.alias if isinstance(projection, exp.Alias) else _postgres_name(value)
            declared[name] = _DECLARED[value.to.this]
    return declared


def _bind_tables(session: "Session", bound: BoundQuery, pinned: TableRef | None,
                 found: list[exp.Expression]) -> None:
    """`found`: the nodes of `bound.tree` (walk.nodes)."""
    from omnilake.engine import vector_search
    ctx = bound.ctx
    cte_names = {ident(n.args["alias"].this) for n in found if isinstance(n, exp.CTE)}
    referenced = referenced_names(found)
    for number, node in enumerate([n for n in found if isinstance(n, exp.Table)]):
        if not isinstance(node.this, exp.Identifier):
            continue  # table functions
        name = ident(node.this)
        namespace = ident(node.args.get("db"))
        if namespace is None and name in cte_names:
            continue
        private = f"{bound.prefix}t{number}"
        if namespace is None and name in session.registered:
            bound.register(private, session.registered[name])
        elif namespace in VIRTUAL_SCHEMAS:
            from omnilake.engine.catalog_views import virtual_table
            bound.register(private, virtual_table(session, namespace, name))
        elif (builder := virtual_builder(session, namespace, name)) is not None:
            bound.register(private, builder(session, name))
        else:
            ref, snapshot_id, pending = table_rows(session, node, pinned)
            row_filter = _pruning_filter(node, ref)
            search = vector_search.match(node, ref)
            if search is not None:  # ORDER BY distance LIMIT k: only the k nearest rows
                bound.scans.append(_search(session, ref, search, snapshot_id, row_filter, pending))
                bound.scans[-1].private = private  # registered once bind() knows it is needed
                node.replace(exp.Table(this=exp.to_identifier(private), alias=_alias(node, name)))
                continue
            columns = read_columns(ref.columns(), referenced)
            pending = scan_ready_rows(pending, columns)
            engine = session.engine
            try:
                frame, plan = scan(ctx, ref.table, ref.qualified, columns, snapshot_id,
                                   row_filter, engine.plan_cache, private, pending,
                                   engine.column_cache)
            except E.Error:
                raise
            except Exception:
                # A filter pyiceberg cannot bind must never fail the query: scan without it.
                frame, plan = scan(ctx, ref.table, ref.qualified, columns, snapshot_id,
                                   AlwaysTrue(), engine.plan_cache, private, pending,
                                   engine.column_cache)
            bound.registered.extend(plan.registered)
            bound.register(private, frame, plan.rows)
            bound.scans.append(plan)
        node.replace(exp.Table(this=exp.to_identifier(private), alias=_alias(node, name)))


def table_rows(session: "Session", node: exp.Table, pinned: TableRef | None = None):
    """(table, snapshot id, memtable rows) that the stored table `node` names reads: the
    transaction's view inside one, the time-travel snapshot with `FOR VERSION AS OF`."""
    key = split_name(node, session.schema)
    version = node.args.get("version")
    tx = session.transaction
    if tx is not None and version is None:
        ref, pending = tx.pin(key, lambda k=key: snapshot_and_pending(session, k, pinned))
        snapshot_id, pending = tx.visible(key, _snapshot_for(ref, None), pending)
    else:
        ref, pending = snapshot_and_pending(session, key, pinned)
        if version is not None:
            pending = []
        snapshot_id = _snapshot_for(ref, version)
    return ref, snapshot_id, pending


def referenced_names(found: list[exp.Expression]) -> set[str] | None:
    """Every name the statement mentions (columns, aliases, USING lists), or None when it
    reads whole rows (`*`, `t.*`, NATURAL JOIN). `found`: the statement's nodes (walk.nodes).
    A scan reads only the columns named here: DataFusion would prune the others from Parquet
    itself, but the column cache and the memtable casts see the scan's columns first."""
    names = set()
    for node in found:
        if isinstance(node, (exp.Identifier, exp.Var)):
            names.add(node.this if isinstance(node.this, str) else node.name)
        elif isinstance(node, exp.Star) and not isinstance(node.parent, exp.Func):
            return None
        elif isinstance(node, exp.Join) and (node.args.get("method") or "").upper() == "NATURAL":
            return None
    return names


def read_columns(columns: list[Column], referenced: set[str] | None) -> list[Column]:
    """The table's columns a statement can read (see referenced_names); at least one, so
    `count(*)` still counts rows."""
    if referenced is None:
        return columns
    return [c for c in columns if c.name in referenced] or columns[:1]


def _alias(node: exp.Table, name: str) -> exp.TableAlias:
    """The alias for the table that replaces `node` (moved from it: `node` is dropped)."""
    alias = node.args.get("alias")
    return alias.pop() if alias is not None else \
        exp.TableAlias(this=exp.to_identifier(name, quoted=True))


def _search(session: "Session", ref: TableRef, search, snapshot_id, row_filter, pending):
    from omnilake.engine import vector_search
    try:
        tables, plan = vector_search.run(session, ref, search, snapshot_id, row_filter, pending)
    except E.Error:
        raise
    except Exception:  # a filter pyiceberg cannot bind must never fail the query
        tables, plan = vector_search.run(session, ref, search, snapshot_id, AlwaysTrue(), pending)
    plan.result = tables[0]
    return plan


def virtual_builder(session: "Session", namespace: str | None, name: str):
    """The front end's builder for a virtual table: `pg_catalog.pg_class`, or `pg_class`
    unqualified (PostgreSQL searches pg_catalog first), or None for a stored table."""
    schemas = session.engine.virtual_schemas
    if namespace is not None:
        return schemas.get(namespace)
    for builder in schemas.values():
        if name in getattr(builder, "implicit", ()):
            return builder
    return None


def snapshot_and_pending(session: "Session", key: tuple[str, str], pinned: TableRef | None):
    """The table and its memtable rows, taken together (see storage/memtable.py)."""
    if pinned is not None and key == (pinned.namespace, pinned.name):
        # The target of an UPDATE/DELETE: exactly the snapshot it rewrites. Rows inserted
        # since its flush stay pending and are flushed on their own.
        return pinned, []
    with session.engine.writer.reading(*key) as pending_rows:
        return load(session.engine, *key), pending_rows()


class ScanReadyRows:
    """Memtable rows cast to the types a scan returns (scan.pending_in_scan_types), kept
    while a table's pending rows are the same Arrow tables. Those are immutable, and a write
    or a flush replaces them, so a read of unchanged rows skips the casts (text to
    string_view: ~0.3 ms a statement for 100k rows). scan() casts the rows again, which
    costs nothing once they are in its types. Bounded in bytes, least recently used first
    out; an entry keeps its tables alive until then."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, entries: int = 16):
        self.max_bytes = max_bytes
        self.max_entries = entries
        self._entries: OrderedDict[tuple, tuple[list[pa.Table], pa.Table, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def rows(self, pending: list[pa.Table], columns: list) -> list[pa.Table]:
        if not pending:
            return pending
        key = (id(pending[0]), tuple(columns))  # the oldest pending table names the entry
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and len(entry[0]) == len(pending) \
                    and all(a is b for a, b in zip(entry[0], pending)):
                self._entries.move_to_end(key)
                return [entry[1]]
        memory_only.check(False, "memtable rows in a scan's types")
        ready = pending_in_scan_types(pending, columns)
        size = ready.nbytes + sum(t.nbytes for t in pending)
        if size <= self.max_bytes // 4:
            with self._lock:
                old = self._entries.pop(key, None)
                self._bytes += size - (old[2] if old is not None else 0)
                self._entries[key] = (list(pending), ready, size)
                while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                    self._bytes -= self._entries.popitem(last=False)[1][2]
        return [ready]


_SCAN_READY = ScanReadyRows()


def scan_ready_rows(pending: list[pa.Table], columns: list[Column]) -> list[pa.Table]:
    """Memtable rows in a scan's types, reused while unchanged (ScanReadyRows)."""
    return _SCAN_READY.rows(pending, columns)


def _snapshot_for(ref: TableRef, version: exp.Version | None) -> int | None:
    table = ref.table
    if version is None:
        snapshot = table.current_snapshot()
        return snapshot.snapshot_id if snapshot else None
    kind = version.name.upper()
    value = version.expression
    if isinstance(value, exp.Cast):
        value = value.this
    if not isinstance(value, exp.Literal):
        raise E.InvalidParameterValue(f"FOR {kind} AS OF needs a literal, not {value.sql()}")
    if kind == "VERSION":
        if value.is_string:
            snapshot = table.snapshot_by_name(value.this)
        else:
            snapshot = table.snapshot_by_id(int(value.this))
        if snapshot is None:
            raise E.InvalidParameterValue(
                f"table {ref.qualified} has no snapshot or branch {value.this}",
                hint=f"list them with SELECT * FROM {ref.qualified}$snapshots is not available yet; "
                     "pyiceberg's table.snapshots() lists them")
        return snapshot.snapshot_id
    if kind == "TIMESTAMP":
        try:
            when = dt.datetime.fromisoformat(value.this)
        except ValueError as exc:
            raise E.InvalidTextRepresentation(f"invalid timestamp {value.this!r} in FOR TIMESTAMP AS OF") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        snapshot = table.snapshot_as_of_timestamp(int(when.timestamp() * 1000))
        if snapshot is None:
            raise E.InvalidParameterValue(f"table {ref.qualified} has no snapshot at or before {value.this}")
        return snapshot.snapshot_id
    raise E.NotSupportedError(f"FOR {kind} AS OF is not supported; use VERSION or TIMESTAMP")


def _pruning_filter(node: exp.Table, ref: TableRef):
    """Filter for file pruning from the WHERE of the SELECT that reads `node` directly."""
    parent = node.parent
    if not isinstance(parent, (exp.From, exp.Join)):
        return AlwaysTrue()
    select = parent.parent
    if not isinstance(select, exp.Select) or select.args.get("where") is None:
        return AlwaysTrue()
    joins = select.args.get("joins") or []
    single = not joins
    outer = any(j.side for j in joins)
    alias = node.alias_or_name if node.alias else ident(node.this)
    types = {c.name: c.sql_type.name for c in ref.columns()}

    def resolve(column: exp.Column):
        name = ident(column.this)
        qualifier = ident(column.args.get("table"))
        if qualifier is not None:
            if qualifier != alias or column.args.get("db") is not None:
                return None
        elif not single:
            return None
        return (name, types[name]) if name in types else None

    return pushdown.pruning_filter(select.args["where"].this, resolve, allow_is_null=not outer)


def _name_outputs(tree: exp.Expression) -> dict[str, str]:
    """Give unnamed output columns PostgreSQL's names (`count`, `?column?`).

    DataFusion needs unique projection names, PostgreSQL allows duplicates, so each unnamed
    expression gets a private unique alias, renamed back after execution.
    """
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    if isinstance(select, exp.Subquery):
        select = select.unnest()
    if not isinstance(select, exp.Select):
        return {}
    renames, aliases = {}, set()
    generator = None
    for i, projection in enumerate(select.expressions):
        if isinstance(projection, exp.Star):
            continue
        if isinstance(projection, exp.Column):
            # what projection.sql() gives, with one generator and no copy of the column
            generator = generator or Dialect.get_or_raise(None).generator()
            text = generator.generate(projection, copy=False)
            if text not in aliases:  # the same column twice needs a private name
                aliases.add(text)
                continue
        if isinstance(projection, exp.Alias):
            if projection.alias not in aliases:
                aliases.add(projection.alias)
                continue
            name, value = projection.alias, projection.this
        else:
            name, value = _postgres_name(projection), projection
        private = f"__ol_c{i}"
        renames[private] = name
        # `value` moves into the new projection; the old one is dropped, so no copy
        select.set("expressions", exp.alias_(value, private, quoted=True, copy=False), index=i)
    return renames


def _postgres_name(node: exp.Expression) -> str:
    node = node.unnest()
    if isinstance(node, exp.Cast):
        inner = node.this.unnest()
        if isinstance(inner, exp.Column):
            return inner.name
        return _postgres_name(inner) if not isinstance(inner, exp.Literal) else \
            node.to.sql("postgres").split("(")[0].lower()
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    if isinstance(node, exp.Boolean):
        return "bool"
    return "?column?"


def normalise_output(table: pa.Table, renames: dict[str, str] | None = None,
                     declared: dict[str, str] | None = None) -> pa.Table:
    """Results in the types users get back: microsecond timestamps, plain strings."""
    fields, arrays, changed = [], [], False
    for f, column in zip(table.schema, table.columns):
        out = output_field(f, renames, declared)
        if out.type != f.type:
            column = column.cast(out.type, safe=False)
        changed = changed or out is not f
        fields.append(out)
        arrays.append(column)
    if not changed:
        return table
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def output_field(f: pa.Field, renames: dict[str, str] | None,
                 declared: dict[str, str] | None) -> pa.Field:
    """`f` as normalise_output returns it (`f` itself when nothing changes)."""
    t = f.type
    if pa.types.is_timestamp(t) and t.unit == "ns":
        t = pa.timestamp("us", tz=t.tz)
    elif pa.types.is_string_view(t) or pa.types.is_string(t):
        t = pa.large_string()
    elif pa.types.is_binary_view(t) or pa.types.is_binary(t):
        t = pa.large_binary()
    name = (renames or {}).get(f.name, f.name)
    metadata = f.metadata
    tagged = declared and name in declared and not (metadata or {}).get(SQL_TYPE_KEY.encode())
    if tagged:
        metadata = {**(metadata or {}), SQL_TYPE_KEY.encode(): declared[name].encode()}
    if t == f.type and name == f.name and not tagged:
        return f
    return pa.field(name, t, f.nullable, metadata=metadata)
