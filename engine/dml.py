"""INSERT, UPDATE, DELETE, TRUNCATE and CREATE TABLE AS, committed through pyiceberg.

Every write first builds the complete new rows and checks them (`coerce.to_storage`), then
commits once: a failing statement writes nothing. UPDATE and DELETE are copy-on-write. When
the WHERE clause converts exactly into an Iceberg expression, pyiceberg rewrites only the
files that may hold matching rows; otherwise the table is rewritten as a whole in one commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.expressions.visitors import bind as bind_filter
from sqlglot import exp, parse_one

from omnilake import errors as E
from omnilake.catalog.types import from_arrow
from omnilake.engine import pushdown
from omnilake.engine import rewrites
from omnilake.engine.coerce import cast_column, normalise_input, to_storage
from omnilake.engine.dialect import NumberArray, Postgres, to_datafusion
from omnilake.engine.errors import from_datafusion
from omnilake.engine.ddl import create_table
from omnilake.engine.query import bind, snapshot_and_pending
from omnilake.engine.scan import scan_type
from omnilake.engine.tables import TableRef, ident, load, split_name

if TYPE_CHECKING:
    from omnilake.engine.engine import Result, Session

def _result(status: str, rowcount: int) -> "Result":
    from omnilake.engine.engine import Result
    return Result(status=status, rowcount=rowcount)


def _query_rows(session: "Session", tree: exp.Expression, pinned: TableRef | None = None) -> pa.Table:
    return bind(session, tree, pinned=pinned).to_arrow()


def insert(session: "Session", tree: exp.Insert) -> "Result":
    target = tree.this
    names = None
    if isinstance(target, exp.Schema):
        names = [ident(e) for e in target.expressions]
        target = target.this
    for unsupported in ("conflict", "returning", "overwrite"):
        if tree.args.get(unsupported):
            raise E.NotSupportedError(f"INSERT ... {unsupported.upper()} is not supported yet")
    ref = load(session.engine, *split_name(target, session.schema))
    source = tree.expression
    rows = None
    if isinstance(source, exp.Values):
        if any(isinstance(v, exp.Var) and v.name.upper() == "DEFAULT" for v in source.find_all(exp.Var)):
            raise E.NotSupportedError("DEFAULT values are not supported yet")
        rows = literal_rows(source)  # plain literals need no query engine
        if rows is None:
            source = exp.select("*").from_(exp.Subquery(this=source, alias=exp.TableAlias(
                this=exp.to_identifier("__ol_values"))))
    if rows is None:
        rows = _query_rows(session, source)
    rows = normalise_input(rows)
    count = insert_rows(session, ref, rows, names)
    return _result(f"INSERT 0 {count}", count)


class _NotLiteral(Exception):
    pass


def literal_rows(values: exp.Values) -> pa.Table | None:
    """The rows of a VALUES list made only of literals (what parameter binding produces), as
    Arrow, or None when some value needs evaluating. Saves a DataFusion query per INSERT."""
    try:
        table = [[_python_value(node) for node in row.expressions] for row in values.expressions]
    except _NotLiteral:
        return None
    width = {len(row) for row in table}
    if len(width) != 1:
        raise E.SyntaxError("VALUES lists must all be the same length")
    try:
        return pa.table({f"column{i + 1}": pa.array([row[i] for row in table])
                         for i in range(width.pop())})
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None  # mixed types in a column: DataFusion unifies them


def _python_value(node: exp.Expression):
    import datetime as dt
    import decimal
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        try:
            return int(text)
        except ValueError:
            return decimal.Decimal(text) if "e" not in text.lower() else float(text)
    if isinstance(node, exp.Neg):
        value = _python_value(node.this)
        if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
            return -value
    if isinstance(node, exp.HexString):
        return bytes.fromhex(node.this)
    if isinstance(node, NumberArray):
        return list(node.args["values"])
    if isinstance(node, exp.Array):
        return [_python_value(v) for v in node.expressions]
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        text, kind = node.this.this, node.to.this
        try:
            if kind == exp.DataType.Type.DATE:
                return dt.date.fromisoformat(text)
            if kind in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
                value = dt.datetime.fromisoformat(text)
                if (value.tzinfo is None) == (kind == exp.DataType.Type.TIMESTAMP):
                    return value
            if kind == exp.DataType.Type.TIME:
                return dt.time.fromisoformat(text)
            if kind == exp.DataType.Type.DOUBLE:
                return float(text)
        except ValueError:
            pass
    raise _NotLiteral


def batchable(tree: exp.Expression) -> bool:
    """INSERT INTO t [(cols)] VALUES (<placeholders only>): executemany writes it as one batch."""
    if not isinstance(tree, exp.Insert) or any(tree.args.get(k) for k in ("conflict", "returning")):
        return False
    values = tree.expression
    return (isinstance(values, exp.Values) and len(values.expressions) == 1
            and all(isinstance(v, (exp.Placeholder, exp.Parameter))
                    for v in values.expressions[0].expressions))


def insert_many(session: "Session", tree: exp.Insert, seq) -> "Result":
    """One INSERT of every parameter set's row (see `batchable`)."""
    from omnilake.engine.engine import Result
    row = tree.expression.expressions[0].expressions
    target, names = tree.this, None
    if isinstance(target, exp.Schema):
        names = [ident(e) for e in target.expressions]
        target = target.this
    rewrites.fold_identifiers(target)
    ref = load(session.engine, *split_name(target, session.schema))
    keys = [n.name if n.name != "?" else "" for n in row]
    named = any(keys) and not all(k.isdigit() for k in keys)
    if not named:
        for params in seq:
            if len(params) != len(row):
                raise E.ProgrammingError(f"the statement has {len(row)} placeholders but a "
                                         f"parameter set has {len(params)}")
    columns = []
    for i, (node, name) in enumerate(zip(row, keys)):
        key = name if named else (int(name) - 1 if name.isdigit() else i)
        try:
            columns.append(parameter_column([params[key] for params in seq]))
        except (KeyError, IndexError, TypeError) as exc:
            raise E.ProgrammingError(f"parameter set is missing placeholder {node.sql()}") from exc
    rows = normalise_input(pa.table({f"c{i}": c for i, c in enumerate(columns)}))
    count = insert_rows(session, ref, rows, names)
    return Result(status=f"INSERT 0 {count}", rowcount=count)


def parameter_column(values: list) -> pa.Array:
    """Arrow array for one column of parameters, converted as `params.literal` would bind
    them; mixed Python types fall back to text, which the column's type then parses."""
    import json
    import uuid
    from collections.abc import Mapping
    if any(isinstance(v, Mapping) for v in values):  # JSON documents
        values = [json.dumps(v) if isinstance(v, Mapping) else v for v in values]
    if any(isinstance(v, uuid.UUID) for v in values):
        values = [None if v is None else str(v) for v in values]
    if any(hasattr(v, "tolist") and hasattr(v, "dtype") for v in values):  # NumPy
        values = [v.tolist() if hasattr(v, "tolist") else v for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.large_string())


def insert_rows(session: "Session", ref: TableRef, rows: pa.Table, names: list[str] | None = None) -> int:
    columns = ref.columns()
    generated = ref.generated()
    if names is None:
        if rows.num_columns > len(columns):
            raise E.SyntaxError(f"INSERT has more expressions ({rows.num_columns}) than target "
                                f"columns ({len(columns)})")
        names = [c.name for c in columns[:rows.num_columns]]
    if generated:
        rows, names = with_generated(session, ref, rows, list(names), generated)
    stored = to_storage(rows, columns, names, ref.name)
    if stored.num_rows:
        if session.transaction is not None:
            session.transaction.add(ref, stored)  # logged at COMMIT
        else:
            session.engine.writer.write(ref, stored)
    return stored.num_rows


def with_generated(session: "Session", ref: TableRef, rows: pa.Table, names: list[str],
                   generated: dict[str, str]) -> tuple[pa.Table, list[str]]:
    """`rows` plus the values of the table's generated columns, computed from them."""
    given = [n for n in names if n in generated]
    if given:
        raise E.Error(f'cannot insert a non-DEFAULT value into column "{given[0]}"',
                      detail=f'column "{given[0]}" is a generated column', sqlstate="428C9")
    if rows.num_rows == 0:
        return rows, names
    by_name = dict(zip(names, rows.columns))
    base = {}
    for c in ref.columns():
        if c.name in generated:
            continue
        data = by_name.get(c.name)
        value = cast_column(data if data is not None else pa.nulls(rows.num_rows),
                            c.sql_type, f'column "{c.name}"')
        base[c.name] = value.cast(scan_type(c.sql_type))  # the types queries see
    select = exp.select(*[exp.alias_(parse_one(text, dialect=Postgres), name, quoted=True)
                          for name, text in generated.items()])
    values = _evaluate(session, select, pa.table(base))
    return (pa.Table.from_arrays(list(rows.columns) + list(values.columns),
                                 names=list(names) + list(generated)),
            list(names) + list(generated))


def _evaluate(session: "Session", select: exp.Select, data: pa.Table) -> pa.Table:
    """Run `select` (no FROM yet) over `data`, registered under a private name."""
    from omnilake.engine.embeddings import rewrite_model_arguments
    from omnilake.engine.planning import SMALL_STATEMENT_ROWS, plan_sql
    from omnilake.engine.query import batches_of, new_statement_name
    ctx = session.engine.datafusion
    name = new_statement_name("rows")
    ctx.register_record_batches(name, [batches_of(data)])
    try:
        tree = rewrites.apply(select.from_(exp.to_identifier(name)))
        tree = rewrite_model_arguments(tree, session.engine.embeddings)
        try:
            return plan_sql(ctx, to_datafusion(tree),
                            small=data.num_rows <= SMALL_STATEMENT_ROWS).to_arrow_table()
        except Exception as exc:
            raise from_datafusion(exc) from exc
    finally:
        ctx.deregister_table(name)


def insert_arrow(session: "Session", table_name: str, data, create: bool = False) -> int:
    """conn.insert(): Arrow (or anything Arrow can read) into a table, by column name."""
    rows = normalise_input(as_arrow(data))
    namespace, name = _split_dotted(table_name, session.schema)
    if create and not session.engine.warehouse.catalog.table_exists((namespace, name)):
        columns = [(f.name, from_arrow(f.type), False) for f in rows.schema]
        ref = create_table(session, namespace, name, columns, [], if_not_exists=True)
        if ref is not None:
            return _fill_new_table(session, ref, rows, list(rows.column_names))
    ref = load(session.engine, namespace, name)
    return insert_rows(session, ref, rows, list(rows.column_names))


def as_arrow(data) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    try:
        import pandas as pd
        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
    except ImportError:  # pandas is a dependency, but keep Arrow-only use working without it
        pass
    if isinstance(data, dict):
        return pa.table(data)
    raise E.DataError(f"cannot insert a {type(data).__name__}: pass an Arrow table, a record "
                      "batch, a pandas DataFrame or a dict of columns")


def _split_dotted(name: str, default_schema: str) -> tuple[str, str]:
    parts = name.split(".")
    if len(parts) == 1:
        return default_schema, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise E.InvalidParameterValue(f"table name {name!r} has too many parts")


def _resolver(ref: TableRef, alias: str):
    types = {c.name: c.sql_type.name for c in ref.columns()}

    def resolve(column: exp.Column):
        qualifier = ident(column.args.get("table"))
        name = ident(column.this)
        if qualifier not in (None, alias) or name not in types:
            return None
        return name, types[name]
    return resolve


def _exact_filter(ref: TableRef, alias: str, where: exp.Expression | None):
    """The Iceberg filter for a DELETE/UPDATE condition, or None to rewrite the table instead.
    Binding it to the schema here means pyiceberg never fails on it mid-commit."""
    if where is None:
        return AlwaysTrue()
    exact = pushdown.to_delete_filter(where, _resolver(ref, alias))
    if exact is None:
        return None
    try:
        bind_filter(ref.table.schema(), exact, case_sensitive=True)
    except Exception:  # a literal pyiceberg cannot convert: the general path handles it
        return None
    return exact


def _target(session: "Session", node: exp.Table) -> tuple[TableRef, str]:
    """The table an UPDATE/DELETE rewrites, with its pending rows flushed first (copy-on-write
    works on snapshots only). In a transaction: the table as the transaction first read it."""
    namespace, name = split_name(node, session.schema)
    tx = session.transaction
    if tx is not None:
        key = (namespace, name)
        ref, _ = tx.pin(key, lambda: snapshot_and_pending(session, key, None))
        return ref, node.alias or ref.name
    session.engine.writer.flush(namespace, name)
    ref = load(session.engine, namespace, name)
    return ref, node.alias or ref.name


def _rewrite_filter(session: "Session", ref: TableRef, alias: str, where: exp.Expression | None):
    """The exact Iceberg filter of a file-level rewrite, or None for the general path (always
    inside a transaction, which replaces the table's rows as it sees them at COMMIT)."""
    return None if session.transaction is not None else _exact_filter(ref, alias, where)


def _replace_all(session: "Session", ref: TableRef, rows: pa.Table) -> None:
    """The table's rows are now `rows`: one overwrite commit, or, inside a transaction, the
    transaction's version of the table until COMMIT."""
    if session.transaction is not None:
        session.transaction.replace(ref, rows)
    else:
        _commit_overwrite(ref, rows, AlwaysTrue())


def _scan_select(ref: TableRef, alias: str, projections: list[exp.Expression],
                 where: exp.Expression | None) -> exp.Select:
    table = exp.Table(this=exp.to_identifier(ref.name, quoted=True),
                      db=exp.to_identifier(ref.namespace, quoted=True),
                      alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    select = exp.select(*projections).from_(table)
    return select.where(where.copy()) if where is not None else select


def update(session: "Session", tree: exp.Update) -> "Result":
    if tree.args.get("from_") or tree.args.get("returning"):  # (sqlglot's key is from_)
        raise E.NotSupportedError("UPDATE ... FROM / RETURNING is not supported yet")
    ref, alias = _target(session, tree.this)
    columns = ref.columns()
    generated = ref.generated()
    assignments: dict[str, exp.Expression] = {}
    for eq in tree.expressions:
        name = ident(eq.this.this if isinstance(eq.this, exp.Column) else eq.this)
        ref.column(name)  # raises UndefinedColumn
        if name in generated:
            raise E.Error(f'column "{name}" can only be updated to DEFAULT',
                          detail=f'column "{name}" is a generated column', sqlstate="428C9")
        if name in assignments:
            raise E.SyntaxError(f'multiple assignments to same column "{name}"')
        assignments[name] = eq.expression
    where = tree.args["where"].this if tree.args.get("where") else None
    exact = _rewrite_filter(session, ref, alias, where)

    def column_expr(name: str, value: exp.Expression) -> exp.Expression:
        return exp.alias_(value.copy(), name, quoted=True)

    if exact is not None:
        projections = [column_expr(c.name, assignments.get(c.name, exp.column(c.name, quoted=True)))
                       for c in columns]
        rows = _query_rows(session, _scan_select(ref, alias, projections, where), ref)
        rows = _recompute_generated(session, ref, rows, generated)
        stored = to_storage(rows, columns, [c.name for c in columns], ref.name)
        if stored.num_rows:
            _commit_overwrite(ref, stored, exact)
        return _result(f"UPDATE {stored.num_rows}", stored.num_rows)
    matched = exp.func("coalesce", where.copy(), exp.false()) if where is not None else exp.true()
    projections = []
    for c in columns:
        current = exp.column(c.name, quoted=True)
        if c.name in assignments:
            value = exp.Case(ifs=[exp.If(this=matched.copy(), true=assignments[c.name].copy())],
                             default=current)
        else:
            value = current
        projections.append(column_expr(c.name, value))
    projections.append(exp.alias_(matched, "__ol_matched", quoted=True))
    rows = _query_rows(session, _scan_select(ref, alias, projections, None), ref)
    flags = rows.column("__ol_matched")
    count = pc.sum(flags).as_py() or 0
    rows = rows.drop_columns(["__ol_matched"])
    if generated and count:  # only changed rows need their generated values computed again
        changed = _recompute_generated(session, ref, rows.filter(flags), generated)
        rows = pa.concat_tables([rows.filter(pc.invert(flags)), changed.cast(rows.schema)])
    stored = to_storage(rows, columns, [c.name for c in columns], ref.name)
    if count:
        _replace_all(session, ref, stored)
    return _result(f"UPDATE {count}", count)


def _recompute_generated(session: "Session", ref: TableRef, rows: pa.Table,
                         generated: dict[str, str]) -> pa.Table:
    if not generated:
        return rows
    plain = [n for n in rows.column_names if n not in generated]
    computed, names = with_generated(session, ref, rows.select(plain), plain, generated)
    return computed.select([names.index(n) for n in rows.column_names])


def delete(session: "Session", tree: exp.Delete) -> "Result":
    if tree.args.get("using") or tree.args.get("returning"):
        raise E.NotSupportedError("DELETE ... USING / RETURNING is not supported yet")
    ref, alias = _target(session, tree.this)
    where = tree.args["where"].this if tree.args.get("where") else None
    exact = _rewrite_filter(session, ref, alias, where)
    if exact is not None:
        counted = _query_rows(session, _scan_select(ref, alias, [exp.alias_(
            exp.Count(this=exp.Star()), "n")], where), ref)
        count = counted.column("n")[0].as_py()
        if count:
            _commit(ref, lambda tx: tx.delete(exact))
        return _result(f"DELETE {count}", count)
    condition = exp.func("coalesce", where.copy(), exp.false()) if where is not None else exp.true()
    matched = exp.alias_(condition, "__ol_matched", quoted=True)
    rows = _query_rows(session, _scan_select(ref, alias, [exp.Star(), matched], None), ref)
    flags = rows.column("__ol_matched")
    count = pc.sum(flags).as_py() or 0
    if count:
        kept = rows.filter(pc.invert(flags)).drop_columns(["__ol_matched"])
        columns = ref.columns()
        stored = to_storage(kept, columns, [c.name for c in columns], ref.name)
        _replace_all(session, ref, stored)
    return _result(f"DELETE {count}", count)


def truncate(session: "Session", tree: exp.TruncateTable) -> "Result":
    keys = [split_name(node, session.schema) for node in tree.expressions]
    if session.transaction is not None:
        for node in tree.expressions:
            ref, alias = _target(session, node)
            none = _query_rows(session, _scan_select(ref, alias, [exp.Star()], exp.false()), ref)
            columns = ref.columns()
            _replace_all(session, ref, to_storage(none, columns, [c.name for c in columns], ref.name))
        return _result("TRUNCATE TABLE", 0)
    for namespace, name in keys:
        # Flushed, not discarded: the flush records their LSN in the table, so recovery after
        # a crash cannot bring the truncated rows back from the log.
        session.engine.writer.flush(namespace, name)
    refs = [load(session.engine, *key) for key in keys]
    for ref in refs:
        _commit(ref, lambda tx: tx.delete(AlwaysTrue()))
    return _result("TRUNCATE TABLE", 0)


def _commit_overwrite(ref: TableRef, rows: pa.Table, row_filter) -> None:
    _commit(ref, lambda tx: tx.overwrite(rows, overwrite_filter=row_filter))


def _commit(ref: TableRef, change) -> None:
    """One transaction on the snapshot the statement read; a concurrent change fails it."""
    try:
        with ref.table.transaction() as tx:
            change(tx)
    except (CommitFailedException, ValidationException) as exc:
        raise E.SerializationFailure(
            f"could not serialize access to {ref.qualified} due to a concurrent update",
            hint="retry the statement") from exc


def create_table_as(session: "Session", tree: exp.Create) -> "Result":
    target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    namespace, name = split_name(target, session.schema)
    if session.engine.warehouse.catalog.table_exists((namespace, name)):
        if tree.args.get("exists"):
            return _result("SELECT 0", 0)
        raise E.DuplicateTable(f'relation "{name}" already exists')
    rows = normalise_input(_query_rows(session, tree.expression))
    names = rows.column_names
    if isinstance(tree.this, exp.Schema):
        names = [ident(e) for e in tree.this.expressions]
        if len(names) != rows.num_columns:
            raise E.SyntaxError("CREATE TABLE AS names a different number of columns than the query has")
        rows = rows.rename_columns(names)
    if len(set(names)) != len(names):
        raise E.DuplicateColumn("CREATE TABLE AS needs unique column names; add aliases")
    columns = [(f.name, from_arrow(f.type), False) for f in rows.schema]
    ref = create_table(session, namespace, name, columns, [])
    count = _fill_new_table(session, ref, rows, names)
    return _result(f"SELECT {count}", count)


def _fill_new_table(session: "Session", ref: TableRef, rows: pa.Table, names: list[str]) -> int:
    """Insert into a table this statement created; if that fails, the table goes too."""
    try:
        return insert_rows(session, ref, rows, names)
    except BaseException:
        from omnilake.engine.ddl import drop_table
        drop_table(session, ref.namespace, ref.name)
        raise
