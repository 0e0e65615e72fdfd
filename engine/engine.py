"""The engine (one per warehouse, shared) and sessions (one per connection).

`Session.execute` parses a SQL string with sqlglot, binds parameters into the syntax tree,
and runs each statement through its handler. Results are Arrow tables plus the PostgreSQL
command tag, so the DB-API and the wire server present the same outcome.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from omnilake import errors as E
from omnilake.catalog.warehouse import Warehouse
from omnilake.config import Settings
from omnilake.engine import (blob_functions, blobs, ddl, dml, key_lookup, rewrites,
                             search_result, session_commands, small_aggregate, system_views,
                             vector_index)
from omnilake.engine.catalog_views import table_names
from omnilake.engine.column_cache import ColumnCache
from omnilake.engine.dialect import INPUT_DIALECTS, space_parameters
from omnilake.engine.embeddings import Embeddings
from omnilake.engine.errors import from_parse
from omnilake.engine.params import bind as bind_params
from omnilake.engine.query import bind, new_context, normalise_output
from omnilake.engine.scan import PlanCache
from omnilake.engine.session_commands import SessionCommand
from omnilake.engine.tables import TableCache, ident
from omnilake.engine.transaction import InFailedTransaction, Transaction
from omnilake.engine.vector_index import VectorIndexes
from omnilake.engine.walk import Kinds, nodes
from omnilake.engine.writes import Writer
from omnilake.storage.blobs import BlobStore
from omnilake.storage.objectstore import split as split_uri, translate as storage_error

log = logging.getLogger(__name__)
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to Command" is expected


@dataclass
class Result:
    """Outcome of one statement: rows (for queries) and the PostgreSQL command tag."""

    status: str
    table: pa.Table | None = None
    rowcount: int = -1
    # Session.stream(): a query's rows as batches, produced while they are read (`table` None)
    schema: pa.Schema | None = None
    batches: Iterator[pa.RecordBatch] | None = None


class Engine:
    """Shared state over one warehouse: the catalog and the scan-plan cache."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.warehouse = Warehouse.open(settings.warehouse, settings.catalog,
                                        s3=settings.s3_options(), local_dir=settings.local_dir)
        self.plan_cache = PlanCache(settings.plan_cache_size)
        self.column_cache = ColumnCache(settings.column_cache_bytes, settings.effective_partitions())
        self.datafusion = new_context(settings)
        if self.warehouse.s3 is not None:  # scans read data files straight from the bucket
            bucket, _ = split_uri(self.warehouse.location)
            self.datafusion.register_object_store(
                "s3://", self.warehouse.s3.datafusion_store(bucket), bucket)
        self.tables = TableCache()
        self.embeddings = Embeddings(self.datafusion, settings.device, settings.model_dir)
        self.blobs = BlobStore(self.warehouse.location, self.warehouse.s3)
        self.blobs.load_from = blob_functions.allowed_sources(settings.load_file_from)
        blob_functions.register(self.datafusion, self.blobs)
        self.writer = Writer(self)  # replays what crashed processes left in the log
        # Front ends add schemas of virtual tables (the wire server's pg_catalog) and rewrites
        # of their own; information_schema is built in. Builders: (session, name) -> Arrow.
        self.virtual_schemas: dict[str, Callable] = {system_views.SCHEMA: system_views.system_table}
        # (blob_functions.rewrite_read runs before them, see Session.prepare)
        self.rewriters: list[Callable] = []
        self.text_plans = small_aggregate.TextPlans()
        self.vectors = VectorIndexes(self)
        from omnilake.engine.retention import BackgroundWorker
        self.timeseries = BackgroundWorker(self, settings.timeseries_interval)
        self._lock = threading.Lock()
        self._closed = False

    def session(self) -> "Session":
        return Session(self)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self.vectors.close()
                    self.column_cache.clear()
                    self.timeseries.close()
                    self.writer.close()  # flushes every pending row
                finally:
                    self.warehouse.close()


@dataclass
class Session:
    engine: Engine
    schema: str = ""
    registered: dict[str, pa.Table] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    dialect: str = ""
    transaction: Transaction | None = None
    autocommit: bool = True

    def __post_init__(self):
        self.schema = self.schema or self.engine.settings.schema
        self.dialect = self.dialect or self.engine.settings.dialect
        self.defaults = {"search_path": self.schema, "timezone": "UTC",
                         "transaction_isolation": "read committed", **self.variables}
        self.variables.update(self.defaults)

    def reset(self, name: str | None) -> None:
        """RESET one setting (or ALL) to its value at connection start."""
        if name is None:
            self.variables = dict(self.defaults)
        elif name in self.defaults:
            self.variables[name] = self.defaults[name]
        else:
            self.variables.pop(name, None)
        self.schema = self.variables["search_path"].split(",")[0].strip().strip('"')

    # -- entry points ------------------------------------------------------------------
    def parse(self, sql: str) -> list[exp.Expression]:
        """Parsed statements, fresh copies each call (callers rewrite them in place)."""
        return [tree.copy() for tree in self.parsed(sql)]

    def parsed(self, sql: str) -> tuple[exp.Expression, ...]:
        """The cached parse of `sql`, shared: read only."""
        if not isinstance(sql, str):
            raise E.ProgrammingError(f"a statement must be a string, not {type(sql).__name__}")
        return _parse_cached(sql, self.dialect)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[Result]:
        lookup = _lookup_of(sql, self.dialect) if isinstance(sql, str) else None
        if lookup is not None:  # a key lookup or search known from the text: no copy or bind
            result = self.lookup(lookup, () if params is None else params)
            if result is not None:
                return [result]
        if not params and isinstance(sql, str):
            result = self.run_kept(sql)
            if result is not None:
                return [result]
        trees = self.parse(sql)
        if params is not None and len(trees) > 1:
            raise E.ProgrammingError("parameters can only be used with a single statement")
        if params is not None and len(trees) == 1:
            result = self.insert_row(trees[0], params)
            if result is not None:
                return [result]
        results = []
        for tree in trees:
            results.append(self.run(bind_params(tree, params) if params is not None or
                                    _has_placeholders(tree) else tree))
        return results or [Result(status="EMPTY")]

    def executemany(self, sql: str, seq: Sequence) -> Result:
        """The statement once per parameter set. An INSERT ... VALUES of placeholders only is
        written as one batch: one log record, all rows or none."""
        trees = self.parse(sql)
        if len(trees) == 1 and seq and dml.batchable(trees[0]):
            return self.run(trees[0], lambda tree: dml.insert_many(self, tree, seq))
        total = 0
        for params in seq:
            total += max(self.execute(sql, params)[-1].rowcount, 0)
        return Result(status="EXECUTEMANY", rowcount=total)

    def insert_row(self, tree: exp.Expression, params) -> Result | None:
        """An INSERT ... VALUES of placeholders only (dml.batchable) with one parameter set,
        written as executemany writes its batch: no binding, rewriting or parsing of
        literals. None for any other statement. `tree` is spent."""
        if not dml.batchable(tree):
            return None
        return self.run(tree, lambda tree: dml.insert_many(self, tree, [params]))

    def planned_lookup(self, sql: str):
        """plan_lookup() of a statement text, kept per text (one Lookup object per text, so
        what it reads from a table is worked out once: key_lookup._Layouts)."""
        return _lookup_of(sql, self.dialect)

    def lookup(self, lookup, values) -> Result | None:
        """Run a statement planned from its text (`plan_lookup`) with `values` for its
        parameters under the transaction rules, as run() would run the statement; None where
        it must run the general way."""
        if isinstance(values, Mapping):
            return None
        module = key_lookup if isinstance(lookup, key_lookup.Lookup) else search_result
        table = self.run(lookup.table, lambda tree: module.run(self, lookup, values))
        if table is None:
            return None
        return Result(status=f"SELECT {table.num_rows}", table=table, rowcount=table.num_rows)

    def run_kept(self, sql: str, stream: bool = False) -> Result | None:
        """Run a statement text kept prepared (a small GROUP BY, small_aggregate.TextPlans:
        no parse copy or rewrite) under the transaction rules, its rows as an iterator of
        batches with `stream` (as stream() gives them); None when the text is not kept."""
        planned = self.engine.text_plans.get(self, sql)
        if planned is None:
            return None
        return self.run(planned[0], lambda _: self._kept_query(*planned, stream))

    def _kept_query(self, tree: exp.Expression, memo: list, stream: bool) -> Result:
        """`tree` (shared: read only) answered by small_aggregate, else by DataFusion."""
        table = small_aggregate.answer(self, tree, memo)
        if table is None and stream:
            schema, batches = bind(self, tree.copy()).stream()
            return Result(status="SELECT", schema=schema, batches=batches)
        if table is None:
            table = bind(self, tree.copy()).to_arrow()
        if stream:
            return Result(status="SELECT", schema=table.schema, batches=iter(table.to_batches()))
        return Result(status=f"SELECT {table.num_rows}", table=table, rowcount=table.num_rows)

    def run(self, tree: exp.Expression, handler=None) -> Result:
        """Run one parsed statement (with `handler`, or the one for its kind) under the
        transaction rules: implicit BEGIN with autocommit off, nothing but ROLLBACK/COMMIT
        after an error, and an error marks the transaction failed."""
        if _is_start_transaction(tree):  # sqlglot reads START TRANSACTION as an alias
            tree = exp.Transaction()
        tx = self.transaction
        if tx is not None and tx.failed and not isinstance(tree, (exp.Commit, exp.Rollback)) \
                and not (isinstance(tree, SessionCommand) and tree.kind == "rollback_to"):
            raise InFailedTransaction(
                "current transaction is aborted, commands ignored until end of transaction block",
                hint="ROLLBACK")
        if tx is None and not self.autocommit and not isinstance(
                tree, (exp.Transaction, exp.Commit, exp.Rollback)):
            self.transaction = Transaction()  # DB-API with autocommit off: implicit BEGIN
        try:
            try:
                with blobs.using(self.engine.blobs):  # BLOB casts store large values here
                    return (handler or self._run)(tree)
            except OSError as exc:  # storage (local disk or object store) failed under pyiceberg
                raise storage_error(exc, "storage error") from exc
        except E.Error:
            if self.transaction is not None:
                self.transaction.failed = True
            raise

    def prepare(self, tree: exp.Expression) -> exp.Expression:
        """The statement after OmniLake's rewrites and those of the front end."""
        kinds = Kinds(tree)  # one walk tells which rewrites have anything to do
        tree = rewrites.apply(tree, kinds)
        if kinds.calls("blob_read"):
            tree = blob_functions.rewrite_read(tree)
        for rewrite in self.engine.rewriters:
            tree = rewrite(self, tree)
        return tree

    def stream(self, tree: exp.Expression) -> Result:
        """Like run(), but a plain query's rows come as an iterator of batches
        (`Result.batches`, its columns in `Result.schema`); other statements as run() does."""
        return self.run(tree, self._stream)

    def _stream(self, tree: exp.Expression) -> Result:
        from omnilake.engine.timeseries import special_query
        if not isinstance(tree, (exp.Query, exp.Values)):
            return self._run(tree)
        prepared = self.prepare(tree)
        if not isinstance(prepared, (exp.Query, exp.Values)):
            return self._run(tree)
        special = special_query(self, prepared)  # gap fill, drop_chunks(): materialised
        if special is not None:
            return special
        found = key_lookup.answer(self, prepared)
        if found is None:
            found = small_aggregate.answer(self, prepared)
        if found is not None:
            return Result(status="SELECT", schema=found.schema, batches=iter(found.to_batches()))
        schema, batches = bind(self, prepared).stream()
        return Result(status="SELECT", schema=schema, batches=batches)

    def _run(self, tree: exp.Expression) -> Result:
        tree = self.prepare(tree)
        if self.transaction is not None and not isinstance(tree, _IN_TRANSACTION) and not (
                isinstance(tree, _DDL) and not self.transaction.has_writes):
            # DDL in a transaction that has written nothing takes effect at once, as MySQL
            # does (ORMs create tables inside BEGIN); it cannot be rolled back.
            raise E.NotSupportedError(
                f"{type(tree).__name__.upper()} inside a transaction is not supported yet: "
                "a transaction that has written can hold INSERT, UPDATE, DELETE and queries",
                hint="COMMIT first and run it on its own (or use autocommit)")
        handler = _HANDLERS.get(type(tree))
        if handler is None:
            for kind, candidate in _HANDLERS.items():
                if isinstance(tree, kind):
                    handler = candidate
                    break
        if handler is None:
            raise E.NotSupportedError(f"statement not supported: {tree.sql('postgres')[:200]}")
        return handler(self, tree)

    def register(self, name: str, data) -> None:
        """Name in-memory data for this session's queries. The name is matched as written:
        `FROM t` finds "t", a mixed-case name needs quotes, as PostgreSQL resolves names."""
        self.registered[name] = dml.normalise_input(dml.as_arrow(data))

    def unregister(self, name: str) -> None:
        self.registered.pop(name, None)


@functools.lru_cache(maxsize=512)
def _parse_cached(sql: str, dialect: str) -> tuple[exp.Expression, ...]:
    """Parsing costs ~0.6 ms; applications repeat the same statement text with new parameters."""
    trees: list[exp.Expression] = []
    for piece in _statements(sql, dialect):
        command = session_commands.recognise(piece)
        if command is not None:
            trees.append(command)
            continue
        try:
            parsed = sqlglot.parse(space_parameters(piece), dialect=INPUT_DIALECTS[dialect])
        except (ParseError, TokenError) as exc:
            raise from_parse(exc, piece) from None
        trees.extend(_explain_of(tree, dialect) for tree in parsed if tree is not None)
    return tuple(trees)


def plan_lookup(tree: exp.Expression):
    """A key lookup (engine/key_lookup.py) or a plain vector search (engine/search_result.py)
    planned from the statement's text, placeholders as parameter numbers; else None."""
    return key_lookup.plan(tree) or search_result.plan(tree)


@functools.lru_cache(maxsize=512)
def _lookup_of(sql: str, dialect: str):
    """plan_lookup() of a statement text, from the cached parse."""
    try:
        trees = _parse_cached(sql, dialect)
    except E.Error:
        return None  # the general path reports it
    return plan_lookup(trees[0]) if len(trees) == 1 else None


class Explain(exp.Command):
    """EXPLAIN [ANALYZE] of one query, parsed (sqlglot keeps EXPLAIN as text), so the query's
    placeholders take parameters and it is rewritten like any query."""

    arg_types = {"this": True, "expression": False, "analyze": False}


_EXPLAIN_OPTIONS = re.compile(r"\s*((?:(?:ANALYZE|VERBOSE)\s+)*)(.*)", re.S | re.I)


def _explain_of(tree: exp.Expression, dialect: str) -> exp.Expression:
    """An EXPLAIN command as an Explain node around its parsed query (else unchanged: the
    command then reports what EXPLAIN supports)."""
    if not (isinstance(tree, exp.Command) and tree.name.upper() == "EXPLAIN"
            and isinstance(tree.expression, exp.Literal)):
        return tree
    options, text = _EXPLAIN_OPTIONS.match(tree.expression.name).groups()
    inner = _parse_cached(text, dialect)
    if len(inner) != 1 or not isinstance(inner[0], (exp.Query, exp.Values)):
        return tree
    return Explain(this="EXPLAIN", expression=inner[0].copy(), analyze="ANALYZE" in options.upper())


def _statements(sql: str, dialect: str) -> list[str]:
    """The statements of a string, split at top-level semicolons (sqlglot's tokenizer knows
    quotes and comments), so a session command can sit beside ordinary statements."""
    if ";" not in sql.rstrip().rstrip(";"):
        return [sql]
    try:
        tokens = INPUT_DIALECTS[dialect]().tokenize(space_parameters(sql))
    except TokenError:
        return [sql]  # the parser reports the error
    text = space_parameters(sql)
    pieces, start = [], 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            pieces.append(text[start:token.start])
            start = token.end + 1
    pieces.append(text[start:])
    return [p for p in pieces if p.strip()]


def _has_placeholders(tree: exp.Expression) -> bool:
    return any(isinstance(n, (exp.Placeholder, exp.Parameter)) for n in nodes(tree))


# -- handlers ----------------------------------------------------------------------------
def _query(session: Session, tree: exp.Expression) -> Result:
    from omnilake.engine.timeseries import special_query
    special = special_query(session, tree)  # drop_chunks(), time_bucket_gapfill
    if special is not None:
        return special
    table = key_lookup.answer(session, tree)
    if table is None:
        table = small_aggregate.answer(session, tree)
    if table is None:
        table = bind(session, tree).to_arrow()
    return Result(status=f"SELECT {table.num_rows}", table=table, rowcount=table.num_rows)


def _create(session: Session, tree: exp.Create) -> Result:
    kind = (tree.args.get("kind") or "").upper()
    if kind == "TABLE":
        return ddl.create_table_statement(session, tree)
    if kind == "SCHEMA":
        return ddl.create_schema(session, tree)
    if kind == "INDEX":
        return vector_index.create_index(session, tree)
    if kind == "VIEW" and tree.find(exp.MaterializedProperty) is not None:
        from omnilake.engine import continuous_aggregates
        return continuous_aggregates.create(session, tree)
    raise E.NotSupportedError(f"CREATE {kind} is not supported yet")


def _drop(session: Session, tree: exp.Drop) -> Result:
    kind = (tree.args.get("kind") or "").upper()
    if kind == "TABLE":
        return ddl.drop_table_statement(session, tree)
    if kind == "SCHEMA":
        return ddl.drop_schema(session, tree)
    if kind == "INDEX":
        return vector_index.drop_index(session, tree)
    if kind == "VIEW" and tree.args.get("materialized"):
        from omnilake.engine import continuous_aggregates
        return continuous_aggregates.drop(session, tree)
    raise E.NotSupportedError(f"DROP {kind} is not supported yet")


def _set(session: Session, tree: exp.Set) -> Result:
    for item in tree.expressions:
        assignment = item.this
        if not isinstance(assignment, exp.EQ):
            raise E.NotSupportedError(f"SET form not supported: {item.sql('postgres')}")
        name = ".".join(p.name.lower() for p in assignment.left.parts) \
            if isinstance(assignment.left, exp.Column) else assignment.left.name.lower()
        value_node = assignment.right
        value = value_node.name if not isinstance(value_node, exp.Tuple) else \
            ", ".join(v.name for v in value_node.expressions)
        if isinstance(value_node, exp.Neg):
            value = "-" + value_node.this.name
        if name == "search_path":
            first = value.split(",")[0].strip().strip('"')
            if first not in [".".join(ns) for ns in session.engine.warehouse.catalog.list_namespaces()]:
                raise E.InvalidSchemaName(f'schema "{first}" does not exist')
            session.schema = first
        vector_index.check_setting(name, value)
        if name in ("timezone", "time zone") and value.upper() not in ("UTC", "GMT", "ETC/UTC", "Z"):
            raise E.NotSupportedError(f"time zone {value} is not supported yet; sessions run in UTC")
        session.variables[name] = value
    return Result(status="SET")


def _begin(session: Session, tree: exp.Expression) -> Result:
    if session.transaction is None:  # PostgreSQL only warns about a nested BEGIN
        session.transaction = Transaction()
    return Result(status="BEGIN")


def _commit(session: Session, tree: exp.Expression) -> Result:
    tx, session.transaction = session.transaction, None
    if tx is None:
        return Result(status="COMMIT")
    if tx.failed:
        return Result(status="ROLLBACK")
    # One WAL record: all of it or none.
    session.engine.writer.write_all(tx.parts(), tx.replacements())
    return Result(status="COMMIT")


def _rollback(session: Session, tree: exp.Expression) -> Result:
    if tree.args.get("savepoint"):
        name = tree.args["savepoint"]
        return session_commands.run(session, SessionCommand(
            this="rollback_to", groups=[name.sql("postgres") if isinstance(name, exp.Expression)
                                        else str(name)]))
    session.transaction = None
    return Result(status="ROLLBACK")


def _is_start_transaction(tree: exp.Expression) -> bool:
    return (isinstance(tree, exp.Alias) and isinstance(tree.this, exp.Column)
            and tree.this.name.upper() == "START" and tree.alias.upper() == "TRANSACTION")


def _command(session: Session, tree: exp.Command) -> Result:
    keyword = tree.name.upper()
    rest = tree.expression.name if isinstance(tree.expression, exp.Literal) else \
        (tree.expression.sql() if tree.expression is not None else "")
    if keyword == "EXPLAIN":  # (a parsed EXPLAIN is an Explain node)
        raise E.NotSupportedError("EXPLAIN supports one query (SELECT, WITH, VALUES, UNION)")
    if keyword == "SHOW":
        return _show(session, rest.strip().rstrip(";"))
    if keyword in ("OPTIMIZE", "VACUUM"):
        return _maintain(session, keyword, rest.strip().rstrip(";"))
    if keyword == "REINDEX":
        return vector_index.reindex(session, rest)
    if keyword == "REFRESH":
        from omnilake.engine.continuous_aggregates import refresh_statement
        return refresh_statement(session, rest.strip().rstrip(";"))
    raise E.NotSupportedError(f"{keyword} is not supported yet")


def _maintain(session: Session, keyword: str, target: str) -> Result:
    """OPTIMIZE / VACUUM of one table, or of every table in the current schema."""
    from omnilake.engine import maintenance
    from omnilake.engine.tables import split_name
    if target:
        trees = session.parse(f"SELECT * FROM {target}")
        table = trees[0].find(exp.Table)
        rewrites.fold_identifiers(table)
        targets = [split_name(table, session.schema)]
        if not session.engine.warehouse.catalog.table_exists(targets[0]):
            raise E.UndefinedTable(f'relation "{target}" does not exist')
    else:
        targets = [(session.schema, name) for name in table_names(session, session.schema)]
    records = []
    for namespace, name in targets:
        if keyword == "OPTIMIZE":
            done = maintenance.optimize_statement(session, namespace, name)
            records.append({"table": f"{namespace}.{name}", "files_before": done.files_before,
                            "files_rewritten": done.files_rewritten,
                            "files_written": done.files_written, "rows": done.rows})
        else:
            done = maintenance.vacuum_statement(session, namespace, name)
            records.append({"table": f"{namespace}.{name}", "snapshots_expired": done.snapshots_expired,
                            "files_removed": done.files_removed, "bytes_removed": done.bytes_removed})
    if keyword == "VACUUM" and not target:  # blobs are shared by every table: a whole VACUUM
        records.append(maintenance.vacuum_blobs_statement(session))
    table = normalise_output(pa.Table.from_pylist(records)) if records else None
    return Result(status=keyword, table=table, rowcount=len(records))


def _explain(session: Session, tree: Explain) -> Result:
    query = tree.expression
    if not isinstance(query, exp.Query):
        raise E.NotSupportedError("EXPLAIN supports one query (SELECT, WITH, VALUES, UNION)")
    found = how = None
    if not tree.args.get("analyze"):
        found, how = key_lookup.answer(session, query), ("KeyLookup", "matched")
        if found is None:
            found, how = small_aggregate.answer(session, query), ("SmallAggregate", "grouped")
    if found is not None:  # what runs is that alone (engine/key_lookup.py, small_aggregate.py)
        kinds = ["omnilake_result"]
        lines = [f"{how[0]}: columns=[{', '.join(found.column_names)}] rows={found.num_rows} "
                 f"{how[1]} in the column cache and the memtable (no DataFusion plan)"]
        table = pa.table({"plan_type": pa.array(kinds, pa.large_string()),
                          "plan": pa.array(lines, pa.large_string())})
        return Result(status="EXPLAIN", table=table, rowcount=table.num_rows)
    bound = bind(session, query)
    if bound.direct is not None:  # what runs is the search alone (engine/search_result.py)
        bound.close()
        kinds = ["omnilake_scan", "omnilake_result"]
        lines = [bound.scans[0].describe(),
                 f"SearchResult: columns=[{', '.join(bound.direct.column_names)}] "
                 f"rows={bound.direct.num_rows} from the search's rows, nearest first "
                 "(no DataFusion plan)"]
    else:
        plan = bound.to_arrow(explain="EXPLAIN ANALYZE " if tree.args.get("analyze") else "EXPLAIN ")
        kinds = ["omnilake_scan"] * len(bound.scans) + plan.column(0).to_pylist()
        lines = [s.describe() for s in bound.scans] + plan.column(1).to_pylist()
    table = pa.table({"plan_type": pa.array(kinds, pa.large_string()),
                      "plan": pa.array(lines, pa.large_string())})
    return Result(status="EXPLAIN", table=table, rowcount=table.num_rows)


def _show(session: Session, what: str) -> Result:
    words = what.split()
    if words and words[0].upper() == "TABLES":
        namespace = ident(words[2]) if len(words) >= 3 and words[1].upper() in ("FROM", "IN") \
            else session.schema
        names = table_names(session, namespace)
        table = pa.table({"schema": pa.array([namespace] * len(names), pa.large_string()),
                          "name": pa.array(names, pa.large_string())})
        return Result(status="SHOW", table=table, rowcount=table.num_rows)
    name = what.lower().strip('"')
    name = {"transaction isolation level": "transaction_isolation", "time zone": "timezone",
            "session authorization": "session_authorization"}.get(" ".join(name.split()), name)
    if name == "all":
        items = sorted(session.variables.items())
        table = pa.table({"name": [k for k, _ in items], "setting": [v for _, v in items]})
    elif name in session.variables:
        table = pa.table({name: [session.variables[name]]})
    else:
        raise E.UndefinedObject(f'unrecognized configuration parameter "{name}"')
    table = normalise_output(table)
    return Result(status="SHOW", table=table, rowcount=table.num_rows)


# What a transaction may hold: its writes, reads, and the statements that end it.
_IN_TRANSACTION = (exp.Query, exp.Values, exp.Insert, exp.Update, exp.Delete, exp.TruncateTable,
                   exp.Set, exp.Command, exp.Transaction, exp.Commit, exp.Rollback, SessionCommand)

_DDL = (exp.Create, exp.Drop, exp.Alter)

_HANDLERS = {
    Explain: _explain,
    exp.Query: _query,
    exp.Values: _query,
    exp.Insert: dml.insert,
    exp.Update: dml.update,
    exp.Delete: dml.delete,
    exp.TruncateTable: dml.truncate,
    exp.Create: _create,
    exp.Drop: _drop,
    exp.Alter: ddl.alter_table,
    exp.Set: _set,
    exp.Transaction: _begin,
    exp.Commit: _commit,
    exp.Rollback: _rollback,
    exp.Command: _command,
    SessionCommand: session_commands.run,
}
