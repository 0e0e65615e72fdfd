"""What a prepared statement takes and returns, without running it: parameter types inferred
from where each `$n` stands, and the result columns from DataFusion's plan.

Clients that send binary parameters (asyncpg, JDBC) encode each value by the type the server
reports, so `WHERE id = $1` must say `id`'s type, not text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

from omnilake import errors as E
from omnilake.catalog.types import OIDS, SqlType, from_sqlglot
from omnilake.engine.params import placeholders
from omnilake.engine.walk import nodes
from omnilake.engine.tables import ident, load, split_name

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

_BY_OID = {oid: name for name, oid in OIDS.items()}
_COMPARISONS = (exp.Binary, exp.Like, exp.ILike)


def parameter_types(session: "Session", tree: exp.Expression) -> list[SqlType | None]:
    """The type of each `$n` (index n-1); None where nothing pins it down (sent as text)."""
    every = nodes(tree)  # one walk for the placeholders and the tables
    found = [n for n in every if isinstance(n, (exp.Placeholder, exp.Parameter))]
    numbers = [_number(p) for p in found]
    if not found or any(n is None for n in numbers):
        return []
    columns = _columns_in_scope(session, [n for n in every if isinstance(n, exp.Table)])
    types: list[SqlType | None] = [None] * max(numbers)
    for node, number in zip(found, numbers):
        if types[number - 1] is None:
            types[number - 1] = _infer(node, columns, tree)
    return types


def _number(node: exp.Expression) -> int | None:
    name = node.name
    return int(name) if name.isdigit() else None


def _columns_in_scope(session: "Session", tables: list[exp.Table]) -> dict[str | None, dict[str, SqlType]]:
    """alias or table name -> column -> SQL type, for the stored tables the statement names
    (`tables`: its Table nodes); key None holds every column (for unqualified names)."""
    scope: dict[str | None, dict[str, SqlType]] = {None: {}}
    for node in tables:
        if not isinstance(node.this, exp.Identifier):
            continue
        try:
            namespace, name = split_name(node, session.schema)
            if name in session.registered:
                continue
            ref = load(session.engine, namespace, name)
        except E.Error:  # no such table (or not a stored one: pg_catalog, a view)
            continue
        types = {c.name: c.sql_type for c in ref.columns()}
        scope[name] = types
        alias = node.args.get("alias")
        if alias is not None and alias.name:
            scope[alias.name] = types
        for column, sql_type in types.items():
            scope[None].setdefault(column, sql_type)
    return scope


def _column_type(column: exp.Column, scope) -> SqlType | None:
    table = column.table or None
    return scope.get(table, {}).get(column.name) or scope[None].get(column.name)


def _type_of(node: exp.Expression, scope) -> SqlType | None:
    if isinstance(node, exp.Column):
        return _column_type(node, scope)
    if isinstance(node, exp.Cast):
        try:
            return from_sqlglot(node.to)
        except E.Error:
            return None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return SqlType("text")
        return SqlType("bigint") if node.this.lstrip("-").isdigit() else SqlType("double precision")
    if isinstance(node, exp.Boolean):
        return SqlType("boolean")
    if isinstance(node, exp.Paren):
        return _type_of(node.this, scope)
    return None


def _infer(node: exp.Expression, scope, tree: exp.Expression) -> SqlType | None:
    parent = node.parent
    if isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, exp.Cast):
        return _type_of(parent, scope)
    if isinstance(parent, (exp.Limit, exp.Offset)) or isinstance(parent, exp.Fetch):
        return SqlType("bigint")
    if isinstance(parent, exp.In):
        return _type_of(parent.this, scope)
    if isinstance(parent, exp.Between):
        return _type_of(parent.this, scope)
    if isinstance(parent, _COMPARISONS):
        other = parent.expression if parent.this is node else parent.this
        found = _type_of(other, scope)
        if found is not None and found.name != "vector" and isinstance(
                parent, (exp.Add, exp.Sub, exp.Mul, exp.Div)) and found.name in ("date", "timestamp",
                                                                                 "timestamptz"):
            return None  # date + interval: leave it to the engine
        return found
    if isinstance(parent, exp.Tuple) and isinstance(parent.parent, exp.Values) \
            and isinstance(tree, exp.Insert):
        return _insert_column(tree, parent.expressions.index(node), scope)
    return None


def _insert_column(tree: exp.Insert, position: int, scope) -> SqlType | None:
    target = tree.this
    if isinstance(target, exp.Schema):
        names = [ident(c) for c in target.expressions]
        table = target.this
    else:
        names, table = None, target
    columns = scope.get(table.name) if isinstance(table, exp.Table) else None
    if not columns:
        return None
    names = names or list(columns)
    return columns.get(names[position]) if position < len(names) else None


def result_schema(session: "Session", tree: exp.Expression, param_oids: list[int]) -> pa.Schema | None:
    """The columns a query would return, from its plan; parameters stand in as typed NULLs."""
    from omnilake.engine.planning import plan_sql
    from omnilake.engine.query import bind, normalise_output
    tree = tree.copy()
    for node in placeholders(tree):
        number = _number(node)
        oid = param_oids[number - 1] if number and number <= len(param_oids) else 0
        name = _BY_OID.get(oid, "text")
        sql = "vector" if name == "vector" else name
        node.replace(exp.cast(exp.Null(), "TEXT" if sql == "vector" else sql))
    tree = session.prepare(tree)
    if not isinstance(tree, (exp.Query, exp.Values)):
        if isinstance(tree, exp.Command):
            result = session.run(tree)
            return None if result.table is None else result.table.schema
        return None
    bound = bind(session, tree)
    try:
        schema = plan_sql(bound.ctx, bound.sql(), small=True).schema()  # (planned, not run)
    except Exception as exc:  # DataFusion planning errors
        from omnilake.engine.errors import from_datafusion
        raise from_datafusion(exc) from exc
    finally:
        bound.close()
    return normalise_output(schema.empty_table(), bound.renames, bound.declared).schema
