"""CREATE / DROP / ALTER for schemas and tables, as Iceberg catalog operations."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pyiceberg.exceptions import (NamespaceAlreadyExistsError, NamespaceNotEmptyError,
                                  NoSuchNamespaceError, TableAlreadyExistsError)
from pyiceberg.schema import Schema
from pyiceberg.types import ListType, NestedField, StructType
from sqlglot import exp

from omnilake import errors as E
from sqlglot import parse_one

from omnilake.catalog.types import (GENERATED_PROPERTY, SQL_TYPES_PROPERTY, SqlType,
                                    encode_sql_types, from_sqlglot)
from omnilake.engine.dialect import Postgres
from omnilake.engine.tables import ident, load, split_name

if TYPE_CHECKING:
    from omnilake.engine.engine import Result, Session

_PROMOTIONS = {("integer", "bigint"), ("smallint", "integer"), ("smallint", "bigint"),
               ("real", "double precision")}


def create_schema(session: "Session", tree: exp.Create) -> "Result":
    from omnilake.engine.engine import Result
    name = _schema_name(tree.this)
    try:
        session.engine.warehouse.catalog.create_namespace(name)
    except NamespaceAlreadyExistsError:
        if not tree.args.get("exists"):
            raise E.DuplicateSchema(f'schema "{name}" already exists') from None
    return Result(status="CREATE SCHEMA")


def drop_schema(session: "Session", tree: exp.Drop) -> "Result":
    from omnilake.engine.engine import Result
    catalog = session.engine.warehouse.catalog
    for node in tree.args.get("tables") or tree.expressions or [tree.this]:
        name = _schema_name(node)
        try:
            tables = catalog.list_tables(name)
        except NoSuchNamespaceError:
            if tree.args.get("exists"):
                continue
            raise E.InvalidSchemaName(f'schema "{name}" does not exist') from None
        if tables and not tree.args.get("cascade"):
            raise E.DependentObjectsStillExist(
                f'cannot drop schema "{name}" because other objects depend on it',
                detail=f"it holds {len(tables)} table(s)", hint="use DROP SCHEMA ... CASCADE")
        for table_ident in tables:
            drop_table(session, name, table_ident[-1])
        try:
            catalog.drop_namespace(name)
        except NamespaceNotEmptyError as exc:
            raise E.DependentObjectsStillExist(str(exc)) from exc
    return Result(status="DROP SCHEMA")


def _schema_name(node: exp.Expression) -> str:
    """sqlglot puts a schema name in a Table's `db` slot."""
    if isinstance(node, exp.Table):
        return ident(node.args.get("db") or node.this)
    return ident(node)


def column_definitions(tree: exp.Schema) -> tuple[list[tuple[str, SqlType, bool]], list[str],
                                                  dict[str, str]]:
    """(name, type, required) per column, the primary key column names, and the expressions
    of generated columns (`GENERATED ALWAYS AS (expr) STORED`) by column name."""
    columns, primary, generated = [], [], {}
    for item in tree.expressions:
        if isinstance(item, exp.ColumnDef):
            name = ident(item.this)
            if item.args.get("kind") is None:
                raise E.SyntaxError(f'column "{name}" needs a type')
            sql_type = from_sqlglot(item.args["kind"])
            required = False
            for constraint in item.args.get("constraints") or []:
                kind = constraint.args.get("kind")
                if isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null"):
                    required = True
                elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
                    primary.append(name)
                    required = True
                elif isinstance(kind, exp.ComputedColumnConstraint):
                    generated[name] = kind.this.sql(dialect=Postgres)
                elif isinstance(kind, exp.NotNullColumnConstraint):
                    pass
                else:
                    raise E.NotSupportedError(
                        f'constraint {constraint.sql("postgres")} on column "{name}" is not '
                        "supported yet", hint="supported: NOT NULL, PRIMARY KEY")
            columns.append((name, sql_type, required))
        elif isinstance(item, exp.PrimaryKey):
            primary.extend(ident(e.this if isinstance(e, exp.Ordered) else e) for e in item.expressions)
        else:
            raise E.NotSupportedError(f"table constraint {item.sql('postgres')} is not supported yet",
                                      hint="supported: NOT NULL, PRIMARY KEY")
    names = [c[0] for c in columns]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise E.DuplicateColumn(f'column "{dup}" specified more than once')
    for key in primary:
        if key not in names:
            raise E.UndefinedColumn(f'column "{key}" named in key does not exist')
    columns = [(n, t, r or n in primary) for n, t, r in columns]
    for name, expression in generated.items():
        referenced = {ident(c.this) for c in parse_one(expression, dialect=Postgres).find_all(exp.Column)}
        if referenced & set(generated):
            raise E.NotSupportedError(f'generated column "{name}" cannot refer to a generated column')
        if not referenced <= set(names):
            missing = ", ".join(sorted(referenced - set(names)))
            raise E.UndefinedColumn(f'generated column "{name}" refers to unknown column(s) {missing}')
    return columns, primary, generated


def iceberg_schema(columns: list[tuple[str, SqlType, bool]], primary: list[str]) -> Schema:
    """Top-level fields get ids 1..n, nested ones follow, as pyiceberg assigns fresh ids."""
    next_id = len(columns) + 1
    fields = []
    for field_id, (name, sql_type, required) in enumerate(columns, start=1):
        iceberg_type = sql_type.to_iceberg()
        if isinstance(iceberg_type, ListType):
            iceberg_type = ListType(next_id, iceberg_type.element_type, element_required=False)
            next_id += 1
        elif isinstance(iceberg_type, StructType):  # BLOB
            nested = []
            for child in iceberg_type.fields:
                nested.append(NestedField(next_id, child.name, child.field_type, required=False))
                next_id += 1
            iceberg_type = StructType(*nested)
        fields.append(NestedField(field_id, name, iceberg_type, required=required))
    ids = [i for i, c in enumerate(columns, start=1) if c[0] in primary]
    return Schema(*fields, identifier_field_ids=ids)


def create_table(session: "Session", namespace: str, name: str,
                 columns: list[tuple[str, SqlType, bool]], primary: list[str],
                 if_not_exists: bool = False, generated: dict[str, str] | None = None,
                 timeseries=None):
    """Create the Iceberg table; returns its TableRef, or None if it existed (IF NOT EXISTS).
    `timeseries` (catalog.table_options.TimeSeriesOptions) makes it a time-series table."""
    if not columns:
        raise E.SyntaxError(f'table "{name}" needs at least one column')
    schema = iceberg_schema(columns, primary)
    types = {i: c[1] for i, c in enumerate(columns, start=1)}
    warehouse = session.engine.warehouse
    ids = {c[0]: i for i, c in enumerate(columns, start=1)}
    extra = {GENERATED_PROPERTY: json.dumps({str(ids[n]): e for n, e in generated.items()})} \
        if generated else {}
    layout = {}
    if timeseries is not None:
        from omnilake.catalog.table_options import TIMESERIES_PROPERTY, iceberg_layout
        extra[TIMESERIES_PROPERTY] = timeseries.to_property(ids)
        layout = dict(zip(("partition_spec", "sort_order"), iceberg_layout(timeseries, ids)))
    try:
        table = warehouse.catalog.create_table(
            (namespace, name), schema, location=warehouse.table_location(namespace, name),
            **layout, properties={**extra, SQL_TYPES_PROPERTY: encode_sql_types(types),
                        "write.parquet.compression-codec": "zstd",
                        # Row groups of 128k rows let statistics prune within a file.
                        "write.parquet.row-group-limit": "131072"})
    except TableAlreadyExistsError:
        if if_not_exists:
            return None
        raise E.DuplicateTable(f'relation "{name}" already exists') from None
    except NoSuchNamespaceError:
        raise E.InvalidSchemaName(f'schema "{namespace}" does not exist',
                                  hint=f"CREATE SCHEMA {namespace}") from None
    created = {f.name: f.field_id for f in table.schema().fields}
    if any(created[n] != i for i, (n, _, _) in enumerate(columns, start=1)):
        # pyiceberg numbered differently than expected: key the types by the real ids.
        fixed = {created[n]: t for n, t, _ in columns}
        table.transaction().set_properties({
            SQL_TYPES_PROPERTY: encode_sql_types(fixed),
            GENERATED_PROPERTY: json.dumps({str(created[n]): e for n, e in (generated or {}).items()}),
            **({TIMESERIES_PROPERTY: timeseries.to_property(created)} if timeseries else {}),
        }).commit_transaction()
    return load(session.engine, namespace, name)


def create_table_statement(session: "Session", tree: exp.Create) -> "Result":
    from omnilake.engine.engine import Result
    target = tree.this
    options = _with_options(tree.args.get("properties"))
    if options and tree.expression is not None:
        raise E.NotSupportedError("WITH (...) options are not supported with CREATE TABLE AS",
                                  hint="create the table with its columns, then INSERT ... SELECT")
    if tree.expression is not None:
        from omnilake.engine.dml import create_table_as
        return create_table_as(session, tree)
    if not isinstance(target, exp.Schema):
        raise E.SyntaxError("CREATE TABLE needs a column list or AS SELECT")
    namespace, name = split_name(target.this, session.schema)
    columns, primary, generated = column_definitions(target)
    timeseries = None
    if options:
        from omnilake.catalog.table_options import from_with
        timeseries = from_with(options, {n: t.name for n, t, _ in columns})
    create_table(session, namespace, name, columns, primary, bool(tree.args.get("exists")), generated,
                 timeseries)
    return Result(status="CREATE TABLE")


def _with_options(properties: exp.Properties | None) -> dict[str, str]:
    """`WITH (key = 'value', ...)` as a dict; other table properties are refused."""
    if properties is None:
        return {}
    options = {}
    for prop in properties.expressions:
        value = prop.args.get("value") if isinstance(prop, exp.Property) else None
        if value is None or type(prop) is not exp.Property:
            raise E.NotSupportedError(f"table option {prop.sql('postgres')} is not supported",
                                      hint="time-series tables take WITH (time_column = 'ts', "
                                           "tags = 'host', partition = 'day', retention = '30 days')")
        if not isinstance(value, (exp.Literal, exp.Var, exp.Identifier, exp.Column)):
            raise E.InvalidParameterValue(f"table option {prop.name} needs a literal value")
        options[prop.name.lower()] = value.name
    return options


def drop_table_statement(session: "Session", tree: exp.Drop) -> "Result":
    from omnilake.engine.engine import Result
    nodes = tree.args.get("tables") or tree.expressions or [tree.this]
    refs = []
    for node in nodes:
        namespace, name = split_name(node, session.schema)
        if not session.engine.warehouse.catalog.table_exists((namespace, name)):
            if tree.args.get("exists"):
                continue
            raise E.UndefinedTable(f'table "{name}" does not exist')
        refs.append((namespace, name))
    for namespace, name in refs:
        drop_table(session, namespace, name)
    return Result(status="DROP TABLE")


def drop_table(session: "Session", namespace: str, name: str) -> None:
    session.engine.writer.discard(namespace, name)
    warehouse = session.engine.warehouse
    location = warehouse.catalog.load_table((namespace, name)).location()
    warehouse.catalog.drop_table((namespace, name))
    warehouse.remove_location(location)


def alter_table(session: "Session", tree: exp.Alter) -> "Result":
    from omnilake.engine.engine import Result
    if (tree.args.get("kind") or "TABLE").upper() != "TABLE":
        raise E.NotSupportedError(f"ALTER {tree.args.get('kind')} is not supported")
    namespace, name = split_name(tree.this, session.schema)
    if tree.args.get("exists") and not session.engine.warehouse.catalog.table_exists((namespace, name)):
        return Result(status="ALTER TABLE")
    session.engine.writer.flush(namespace, name)  # pending rows have the old schema
    ref = load(session.engine, namespace, name)
    actions = tree.args.get("actions") or []
    renames = [a for a in actions if isinstance(a, exp.AlterRename)]
    if renames:
        if len(actions) != 1:
            raise E.NotSupportedError("RENAME TO cannot be combined with other ALTER TABLE actions")
        new_ns, new_name = split_name(renames[0].this, namespace)
        try:
            session.engine.warehouse.catalog.rename_table((namespace, name), (new_ns, new_name))
        except TableAlreadyExistsError:
            raise E.DuplicateTable(f'relation "{new_name}" already exists') from None
        except NoSuchNamespaceError:
            raise E.InvalidSchemaName(f'schema "{new_ns}" does not exist') from None
        return Result(status="ALTER TABLE")
    types = dict(ref.sql_types)
    current = {c.name: c for c in ref.columns()}
    added: dict[str, SqlType] = {}
    generated = {current[n].field_id: e for n, e in ref.generated().items()}
    identifier = set(ref.table.schema().identifier_field_names())
    with ref.table.transaction() as tx:
        with tx.update_schema() as update:
            for action in actions:
                _check_generated(action, current, generated, name)
                _check_key(action, identifier, name)
                _apply(update, action, current, types, added, name)
        if generated or GENERATED_PROPERTY in ref.table.properties:
            tx.set_properties({GENERATED_PROPERTY: json.dumps({str(k): v for k, v in generated.items()})})
        # The types of added columns go into the same commit, keyed by the ids pyiceberg gives
        # them: the next free ids in order of addition (checked below).
        next_id = ref.table.metadata.last_column_id + 1
        predicted = dict(types)
        for sql_type in added.values():
            predicted[next_id] = sql_type
            next_id += 2 if sql_type.name == "vector" else 1
        tx.set_properties({SQL_TYPES_PROPERTY: encode_sql_types(predicted)})
    table = session.engine.warehouse.catalog.load_table((namespace, name))
    actual = {f.field_id: types.get(f.field_id) or added[f.name] for f in table.schema().fields}
    if actual != {k: v for k, v in predicted.items() if k in actual}:
        table.transaction().set_properties(
            {SQL_TYPES_PROPERTY: encode_sql_types(actual)}).commit_transaction()
    return Result(status="ALTER TABLE")


def _check_key(action: exp.Expression, identifier: set[str], table: str) -> None:
    if isinstance(action, exp.Drop) and (action.args.get("kind") or "").upper() == "COLUMN":
        for node in action.args.get("tables") or [action.this]:
            column = ident(node.this if isinstance(node, exp.Column) else node)
            if column in identifier:
                raise E.NotSupportedError(
                    f'cannot drop column "{column}" of "{table}": it is part of the primary key',
                    hint="the key (Iceberg identifier fields) cannot be changed yet")


def _check_generated(action: exp.Expression, current: dict, generated: dict[int, str],
                     table: str) -> None:
    """Keep generated-column expressions valid: a renamed column is renamed inside them too,
    a column they use cannot be dropped, a dropped generated column loses its expression."""
    def uses(column: str) -> list[int]:
        return [fid for fid, text in generated.items()
                if column in {ident(c.this) for c in parse_one(text, dialect=Postgres).find_all(exp.Column)}]

    if isinstance(action, exp.Drop) and (action.args.get("kind") or "").upper() == "COLUMN":
        for node in action.args.get("tables") or [action.this]:
            column = ident(node.this if isinstance(node, exp.Column) else node)
            if column in current:
                generated.pop(current[column].field_id, None)
            users = [n for n, c in current.items() if c.field_id in uses(column)]
            if users:
                raise E.DependentObjectsStillExist(
                    f'cannot drop column "{column}" of "{table}": generated column '
                    f'"{users[0]}" uses it')
    elif isinstance(action, exp.RenameColumn):
        old, new = ident(action.this.this), ident(action.args["to"].this)
        for fid in uses(old):
            tree = parse_one(generated[fid], dialect=Postgres)
            for column in tree.find_all(exp.Column):
                if ident(column.this) == old:
                    column.set("this", exp.to_identifier(new, quoted=True))
            generated[fid] = tree.sql(dialect=Postgres)


def _apply(update, action: exp.Expression, current: dict, types: dict, added: dict,
           table: str) -> None:
    if isinstance(action, exp.ColumnDef):
        column = ident(action.this)
        if column in current or column in added:
            if action.args.get("exists"):
                return
            raise E.DuplicateColumn(f'column "{column}" of relation "{table}" already exists')
        sql_type = from_sqlglot(action.args["kind"])
        for constraint in action.args.get("constraints") or []:
            kind = constraint.args.get("kind")
            if isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null"):
                raise E.NotSupportedError(
                    f'cannot add NOT NULL column "{column}": existing rows would hold NULL',
                    hint="add the column without NOT NULL")
            if isinstance(kind, exp.ComputedColumnConstraint):
                raise E.NotSupportedError(
                    "ADD COLUMN ... GENERATED is not supported yet: existing rows would need "
                    "computing", hint="create the table with the generated column")
            if not isinstance(kind, exp.NotNullColumnConstraint):
                raise E.NotSupportedError(f"constraint {constraint.sql('postgres')} is not supported here")
        update.add_column(column, sql_type.to_iceberg())
        added[column] = sql_type
    elif isinstance(action, exp.Drop) and (action.args.get("kind") or "").upper() == "COLUMN":
        for node in action.args.get("tables") or [action.this]:
            column = ident(node.this if isinstance(node, exp.Column) else node)
            if column not in current:
                if action.args.get("exists"):
                    continue
                raise E.UndefinedColumn(f'column "{column}" of relation "{table}" does not exist')
            update.delete_column(column)
            types.pop(current[column].field_id, None)
    elif isinstance(action, exp.RenameColumn):
        old, new = ident(action.this.this), ident(action.args["to"].this)
        if old not in current:
            raise E.UndefinedColumn(f'column "{old}" of relation "{table}" does not exist')
        if new in current:
            raise E.DuplicateColumn(f'column "{new}" of relation "{table}" already exists')
        update.rename_column(old, new)
    elif isinstance(action, exp.AlterColumn) and action.args.get("dtype") is not None:
        column = ident(action.this)
        if column not in current:
            raise E.UndefinedColumn(f'column "{column}" of relation "{table}" does not exist')
        old_type = current[column].sql_type
        new_type = from_sqlglot(action.args["dtype"])
        widened_numeric = (old_type.name == new_type.name == "numeric"
                           and new_type.params[1] == old_type.params[1]
                           and new_type.params[0] >= old_type.params[0])
        if (old_type.name, new_type.name) in _PROMOTIONS or widened_numeric:
            update.update_column(column, field_type=new_type.to_iceberg())
        elif old_type != new_type:
            raise E.NotSupportedError(
                f'cannot change column "{column}" from {old_type} to {new_type} without rewriting',
                hint="Iceberg allows int -> bigint, real -> double precision and wider NUMERIC")
        types[current[column].field_id] = new_type
    else:
        raise E.NotSupportedError(f"ALTER TABLE action {action.sql('postgres')} is not supported")
