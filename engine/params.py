"""Binding DB-API parameters into a parsed statement.

Placeholders (`%s`, `%(name)s`, `$1`) become literal nodes in the syntax tree, never text
pasted into SQL, so a parameter value cannot change the statement's shape.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlglot import exp

from omnilake.engine.dialect import NumberArray
from omnilake.engine.walk import nodes
from omnilake.errors import ProgrammingError, NotSupportedError


def placeholders(tree: exp.Expression) -> list[exp.Expression]:
    return [node for node in nodes(tree) if isinstance(node, (exp.Placeholder, exp.Parameter))]


def bind(tree: exp.Expression, params: Sequence[Any] | Mapping[str, Any] | None) -> exp.Expression:
    """Replace the placeholders of `tree` (in place) with literals for `params`."""
    found = placeholders(tree)
    if not found:
        if params:
            raise ProgrammingError(
                f"the statement has no placeholders but {len(params)} parameter(s) were given")
        return tree
    if params is None:
        raise ProgrammingError(f"the statement has {len(found)} placeholder(s) but no parameters "
                               "were given")
    positional = 0
    for node in found:
        key = parameter_key(node)
        if isinstance(params, Mapping):
            if not isinstance(key, str):
                raise ProgrammingError("named parameters (a dict) need %(name)s placeholders")
            if key not in params:
                raise ProgrammingError(f"no value for parameter {key!r}")
            value = params[key]
        else:
            if isinstance(key, str):
                raise ProgrammingError(f"placeholder %({key})s needs parameters as a dict")
            index = positional if key is None else key - 1
            positional += key is None
            if not 0 <= index < len(params):
                raise ProgrammingError(
                    f"the statement's placeholders need parameter {index + 1} but {len(params)} "
                    "were given")
            value = params[index]
        node.replace(literal(value))
    if not isinstance(params, Mapping) and all(parameter_key(n) is None for n in found) \
            and positional != len(params):
        raise ProgrammingError(
            f"the statement has {positional} placeholder(s) but {len(params)} parameters were given")
    return tree


def parameter_key(node: exp.Expression) -> int | str | None:
    """None for `%s`, an int for `$n`, a name for `%(name)s`."""
    if isinstance(node, exp.Parameter):
        name = node.name
        return int(name) if name.isdigit() else name
    name = node.name
    if not name or name == "?":
        return None
    return int(name) if name.isdigit() else name


def literal(value: Any) -> exp.Expression:
    """A SQL literal node for a Python value."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return exp.Literal.number(repr(value))
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return exp.cast(exp.Literal.string(text), "DOUBLE")
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise NotSupportedError(f"NUMERIC value {value} is not supported")
        return exp.Literal.number(str(value))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return exp.HexString(this=bytes(value).hex())
    if isinstance(value, dt.datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), kind)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, dt.time):
        return exp.cast(exp.Literal.string(value.isoformat()), "TIME")
    if isinstance(value, uuid.UUID):
        return exp.Literal.string(str(value))
    if isinstance(value, Mapping):
        return exp.Literal.string(json.dumps(value))
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # NumPy arrays and scalars
        return literal(value.tolist())
    if isinstance(value, (list, tuple)):
        if value and all(type(v) is int or (type(v) is float and math.isfinite(v)) for v in value):
            return NumberArray(values=tuple(value))  # a vector: one node, not one per number
        return exp.Array(expressions=[literal(v) for v in value])
    raise NotSupportedError(f"cannot use a {type(value).__name__} as a query parameter")
