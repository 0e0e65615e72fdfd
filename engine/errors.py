"""Translation of errors from sqlglot, DataFusion, Arrow and pyiceberg into OmniLake's
hierarchy, in this one place, so a user never sees a raw traceback for bad SQL."""

from __future__ import annotations

import re

import pyarrow as pa
from sqlglot.errors import ParseError, TokenError

from omnilake import errors as E

_DATAFUSION_PATTERNS: list[tuple[re.Pattern, type[E.Error]]] = [(re.compile(p, re.I), cls) for p, cls in [
    (r"No field named|Schema error: .*field", E.UndefinedColumn),
    (r"table '.*' not found|table .* doesn't exist", E.UndefinedTable),
    (r"Invalid function|function .* (not found|does not exist)|no function matches", E.UndefinedFunction),
    (r"Divide by zero|division by zero", E.DivisionByZero),
    (r"overflow", E.NumericValueOutOfRange),
    (r"Cast error|Cannot cast|cannot be cast|Failed to parse|Error parsing|invalid digit", E.InvalidTextRepresentation),
    (r"ParserError|sql parser error|Unsupported SQL|Expected:", E.SyntaxError),
    (r"Cannot infer common|Cannot coerce|does not support|No coercion|type mismatch|"
     r"Unsupported data type|cannot be used", E.DatatypeMismatch),
    (r"Error during planning|Schema error", E.ProgrammingError),
    (r"This feature is not implemented|NotImplemented", E.NotSupportedError),
    (r"Resources exhausted", E.OperationalError),
    (r"Execution error|Arrow error|External error", E.DataError),
]]


def _clean(message: str) -> str:
    """DataFusion prefixes messages with its error kinds; keep what a person can act on."""
    message = message.strip()
    message = re.sub(r"^(DataFusion error: |Internal error: )+", "", message)
    # An exception raised inside a Python UDF: its message, without the traceback.
    raised = re.search(r"PyErr \{ type: <class '[\w.]+'>, value: \w+\((['\"])(.*?)\1\)", message, re.S)
    if raised:
        message = message[:raised.start()] + raised.group(2)
    message = re.sub(r"\s*\n\s*", " ", message)
    return message


_RAISED_CLASS = re.compile(r"PyErr \{ type: <class 'omnilake\.errors\.(\w+)'>")


def from_datafusion(exc: BaseException) -> E.Error:
    message = _clean(str(exc))
    # An OmniLake error raised inside one of our UDFs keeps its class, so its SQLSTATE.
    raised = _RAISED_CLASS.search(str(exc))
    if raised and isinstance(getattr(E, raised.group(1), None), type) \
            and issubclass(getattr(E, raised.group(1)), E.Error):
        return getattr(E, raised.group(1))(message)
    if "Object Store error" in message:  # S3 unreachable, refused, missing objects
        from omnilake.storage.objectstore import translate
        return translate(exc, "cannot read from object storage")
    for pattern, cls in _DATAFUSION_PATTERNS:
        if pattern.search(message):
            return cls(message)
    return E.InternalError(message)


def from_parse(exc: ParseError | TokenError, sql: str) -> E.SyntaxError:
    if isinstance(exc, ParseError) and exc.errors:
        first = exc.errors[0]
        line, column = first.get("line"), first.get("col")
        position = _position(sql, line, column)
        near = first.get("highlight") or ""
        description = first.get("description") or "invalid syntax"
        message = f"syntax error at or near \"{near}\": {description}" if near else \
            f"syntax error: {description}"
        return E.SyntaxError(message, position=position)
    return E.SyntaxError(f"syntax error: {exc}")


def _position(sql: str, line: int | None, column: int | None) -> int | None:
    """1-based character position, as PostgreSQL reports it."""
    if not line or not column:
        return None
    lines = sql.splitlines(keepends=True)
    return sum(len(text) for text in lines[:line - 1]) + max(column - 1, 0) + 1


def from_arrow(exc: pa.ArrowException, what: str) -> E.DataError:
    message = str(exc).split("\n")[0]
    if isinstance(exc, pa.ArrowInvalid) and any(
            word in message.lower() for word in ("overflow", "out of bounds", "not in range",
                                                 "would lose", "precision")):
        return E.NumericValueOutOfRange(f"{what}: value out of range ({message})")
    return E.InvalidTextRepresentation(f"{what}: {message}")
