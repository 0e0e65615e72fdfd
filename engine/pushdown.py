"""Turning SQL predicates into pyiceberg row filters.

Used two ways: to prune data files before a scan (any convertible conjunct helps, DataFusion
still applies the whole WHERE), and for DELETE/UPDATE, where the whole condition must convert
exactly or the statement falls back to rewriting the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pyiceberg import expressions as ie
from sqlglot import exp

# column node -> (current name, SQL type name) in the scanned table, or None if not its column.
Resolver = Callable[[exp.Column], tuple[str, str] | None]

_INTEGERS = {"smallint", "integer", "bigint"}
_FLOATS = {"real", "double precision"}
_TEXTS = {"text", "varchar", "uuid"}
_TEMPORAL = {"date", "timestamp", "timestamptz"}


class _NotConvertible(Exception):
    pass


def conjuncts(condition: exp.Expression | None) -> list[exp.Expression]:
    if condition is None:
        return []
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        return conjuncts(condition.left) + conjuncts(condition.right)
    return [condition]


def to_filter(condition: exp.Expression, resolve: Resolver) -> ie.BooleanExpression | None:
    """The pyiceberg equivalent of `condition` for pruning, or None when there is none."""
    try:
        return _convert(condition.unnest(), resolve)
    except _NotConvertible:
        return None


def to_delete_filter(condition: exp.Expression, resolve: Resolver) -> ie.BooleanExpression | None:
    """A pyiceberg filter that deletes exactly the rows where `condition` is TRUE, or None.

    pyiceberg keeps every row in which a referenced column is NULL (unless an IS [NOT] NULL
    names it) or NaN. For a conjunction of comparisons that is SQL's rule too: the condition is
    NULL, not TRUE, when any compared value is NULL. Under OR it is not (`a <> 0 OR b = 1` is
    TRUE where a is NULL and b is 1), and NaN compares as the largest float in SQL, so
    disjunctions and floating-point columns take the general path."""
    parts = conjuncts(condition)
    for part in parts:
        if part.find(exp.Or) or any(isinstance(n, exp.Not) and not isinstance(
                n.this.unnest(), (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In))
                for n in part.find_all(exp.Not)):
            return None
        for column in part.find_all(exp.Column):
            found = resolve(column)
            if found is not None and found[1] in _FLOATS:
                return None
    converted = to_filter(condition, resolve)
    if converted is None:
        return None
    # A compared column must not be NULL for the condition to be TRUE. Saying so explicitly
    # also keeps pyiceberg from dropping a whole file whose bounds satisfy `i <> 50` while it
    # holds NULLs (its strict bounds check ignores null counts).
    compared = set()
    for node in condition.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In,
                                   exp.Between):
        for column in node.find_all(exp.Column):
            found = resolve(column)
            if found is not None:
                compared.add(found[0])
    for name in sorted(compared):
        converted = ie.And(converted, ie.NotNull(name))
    return converted


def pruning_filter(condition: exp.Expression | None, resolve: Resolver,
                   allow_is_null: bool = True) -> ie.BooleanExpression:
    """AND of the conjuncts that convert: safe for file pruning, not exact."""
    parts = []
    for part in conjuncts(condition):
        if not allow_is_null and part.find(exp.Is):
            continue
        converted = to_filter(part, resolve)
        if converted is not None:
            parts.append(converted)
    if not parts:
        return ie.AlwaysTrue()
    return parts[0] if len(parts) == 1 else ie.And(*parts)


_COMPARISONS = {
    exp.EQ: (ie.EqualTo, ie.EqualTo),
    exp.NEQ: (ie.NotEqualTo, ie.NotEqualTo),
    exp.GT: (ie.GreaterThan, ie.LessThan),
    exp.GTE: (ie.GreaterThanOrEqual, ie.LessThanOrEqual),
    exp.LT: (ie.LessThan, ie.GreaterThan),
    exp.LTE: (ie.LessThanOrEqual, ie.GreaterThanOrEqual),
}


def _convert(node: exp.Expression, resolve: Resolver) -> ie.BooleanExpression:
    node = node.unnest()
    if isinstance(node, exp.And):
        return ie.And(_convert(node.left, resolve), _convert(node.right, resolve))
    if isinstance(node, exp.Or):
        return ie.Or(_convert(node.left, resolve), _convert(node.right, resolve))
    if isinstance(node, exp.Not):
        return ie.Not(_convert(node.this, resolve))
    if isinstance(node, exp.Is) and _is_null(node):
        # sqlglot parses `x IS NOT NULL` as Is(x, NULL, negate=True)
        name = _column(node.this, resolve)[0]
        return ie.NotNull(name) if node.args.get("negate") else ie.IsNull(name)
    for kind, (forward, flipped) in _COMPARISONS.items():
        if type(node) is kind:
            left, right = node.left.unnest(), node.right.unnest()
            if isinstance(left, exp.Column):
                name, kind = _column(left, resolve)
                return forward(name, _value(right, kind))
            if isinstance(right, exp.Column):
                name, kind = _column(right, resolve)
                return flipped(name, _value(left, kind))
            _fail()
    if isinstance(node, exp.In) and not node.args.get("query") and node.expressions:
        name, kind = _column(node.this, resolve)
        return ie.In(name, [_value(v, kind) for v in node.expressions])
    if isinstance(node, exp.Between):
        name, kind = _column(node.this, resolve)
        return ie.And(ie.GreaterThanOrEqual(name, _value(node.args["low"], kind)),
                      ie.LessThanOrEqual(name, _value(node.args["high"], kind)))
    return _fail()


def _fail():
    raise _NotConvertible


def _is_null(node: exp.Is) -> bool:
    return isinstance(node.expression, exp.Null)


def _column(node: exp.Expression, resolve: Resolver) -> tuple[str, str]:
    node = node.unnest()
    if not isinstance(node, exp.Column):
        _fail()
    found = resolve(node)
    if found is None:
        _fail()
    return found


def _value(node: exp.Expression, kind: str):
    """The literal as a Python value, only where pyiceberg compares it exactly as SQL would."""
    node = node.unnest()
    if isinstance(node, exp.Cast) and kind in _TEMPORAL and node.to.this in (
            exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
        node = node.this
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return -_value(node.this, kind)
    if isinstance(node, exp.Boolean) and kind == "boolean":
        return node.this
    if not isinstance(node, exp.Literal):
        return _fail()
    if node.is_string:
        if kind in _TEXTS:
            return node.this
        if kind in _TEMPORAL:
            return _temporal(node.this, kind)
        return _fail()
    # Floating-point columns are never pushed down: Iceberg bounds leave NaN out, while SQL
    # orders NaN above every number, so pruning by bounds could drop matching NaN rows.
    if kind in _INTEGERS:
        try:
            return int(node.this)
        except ValueError:
            return _fail()
    return _fail()


def _temporal(text: str, kind: str) -> str:
    """The literal in the strict ISO form pyiceberg parses; other spellings are not pushed."""
    try:
        if kind == "date":
            return dt.date.fromisoformat(text).isoformat()
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _fail()
    if kind == "timestamp":
        return value.isoformat() if value.tzinfo is None else _fail()
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)  # sessions run in UTC (SET TIME ZONE)
    return value.astimezone(dt.timezone.utc).isoformat()
