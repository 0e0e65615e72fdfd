"""Casting incoming rows to a table's columns, with the checks a write must pass.

Every write path (INSERT, executemany, CREATE TABLE AS, conn.insert) goes through
`to_storage`: it either returns the rows in the table's stored Arrow form or raises a clear
error before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from omnilake import errors as E
from omnilake.catalog.types import SqlType
from omnilake.engine.errors import from_arrow
from omnilake.engine.scan import Column

_INTEGER_KINDS = {"smallint", "integer", "bigint"}


def normalise_input(table: pa.Table) -> pa.Table:
    """Drop Parquet field-id metadata and view types that other tools' Arrow data carries."""
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_string_view(t):
            t = pa.large_string()
        elif pa.types.is_binary_view(t):
            t = pa.large_binary()
        fields.append(pa.field(f.name, t, f.nullable))
    return table.cast(pa.schema(fields))  # the target schema carries no metadata


def to_storage(source: pa.Table, columns: Sequence[Column], targets: Sequence[str],
               table_name: str) -> pa.Table:
    """Rows of `source` (its columns feed `targets`, in order) in the table's storage form."""
    if source.num_columns != len(targets):
        raise E.SyntaxError(
            f"INSERT has {source.num_columns} expression(s) but {len(targets)} target column(s)")
    by_name = {c.name: c for c in columns}
    for name in targets:
        if name not in by_name:
            raise E.UndefinedColumn(f'column "{name}" of relation "{table_name}" does not exist')
    if len(set(targets)) != len(targets):
        raise E.DuplicateColumn(f"a column is named more than once in the INSERT into {table_name}")
    given = dict(zip(targets, source.columns))
    arrays, fields = [], []
    for c in columns:
        data = given.get(c.name)
        if data is None:
            data = pa.nulls(source.num_rows, c.sql_type.to_arrow())
        data = cast_column(data, c.sql_type, f'column "{c.name}"')
        if c.required and data.null_count:
            raise E.NotNullViolation(
                f'null value in column "{c.name}" of relation "{table_name}" violates '
                "not-null constraint")
        storage = c.sql_type.storage_arrow()
        arrays.append(data.cast(storage) if data.type != storage else data)
        fields.append(pa.field(c.name, storage, nullable=not c.required))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def cast_column(data: pa.ChunkedArray | pa.Array, sql_type: SqlType, what: str) -> pa.ChunkedArray:
    """Values of `data` as `sql_type`'s engine Arrow type, or a DataError naming `what`."""
    if isinstance(data, pa.Array):
        data = pa.chunked_array([data])
    target = sql_type.to_arrow()
    kind = sql_type.name
    if pa.types.is_null(data.type):
        return pa.nulls(len(data), target) if len(data) else pa.chunked_array([], target)
    if kind == "vector":
        return _to_vector(data, sql_type.params[0], what)
    if kind == "blob":
        from omnilake.engine.blobs import to_blob_column
        return to_blob_column(data, what)
    if kind == "uuid":
        return _map_text(data, _canonical_uuid, what, "uuid")
    if kind == "json":
        if pa.types.is_string(data.type) or pa.types.is_large_string(data.type):
            return _map_text(data, _checked_json, what, "json")
        return pa.chunked_array([pa.array([None if v is None else json.dumps(v) for v in data.to_pylist()],
                                          pa.large_string())])
    if kind == "bytea" and _is_text(data.type):
        return _map_binary(data, what)
    if kind in ("text", "varchar") and not _is_text(data.type):
        data = _text_of(data)
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(data.type) \
            and (data.type.tz is None) != (target.tz is None):
        # naive <-> aware: the session time zone is UTC, so the instant keeps its wall clock.
        data = pc.cast(data, pa.timestamp(data.type.unit, tz=target.tz))
    if pa.types.is_timestamp(target) and _is_text(data.type):
        data = _parse_timestamps(data, target, what)
    if pa.types.is_time(target) and _is_text(data.type):
        data = _parse_times(data, target, what)  # (Arrow has no text -> time cast)
    inexact = pa.types.is_floating(data.type) or pa.types.is_decimal(data.type)
    if kind in _INTEGER_KINDS and inexact:
        data = pc.round(data, round_mode="half_towards_infinity")  # as PostgreSQL rounds
    if kind == "numeric" and inexact:
        data = pc.round(data, ndigits=sql_type.params[1], round_mode="half_towards_infinity")
    elif kind == "numeric" and pa.types.is_integer(data.type):
        data = pc.cast(data, pa.decimal128(38, sql_type.params[1]))
    if pa.types.is_floating(target) and pa.types.is_decimal(data.type):
        # Arrow's decimal -> float cast is not correctly rounded (10.2 became
        # 10.200000000000001); the shortest decimal text parses to the nearest float.
        data = pc.cast(pc.cast(data, pa.large_string()), pa.float64())
    try:
        options = pc.CastOptions(target, allow_time_truncate=True, allow_float_truncate=False)
        result = pc.cast(data, options=options)
    except pa.ArrowNotImplementedError as exc:
        raise E.DatatypeMismatch(f"{what} is of type {sql_type} but the value is of type "
                                 f"{data.type}") from exc
    except pa.ArrowException as exc:
        raise from_arrow(exc, f"invalid value for {what} of type {sql_type}") from exc
    if kind == "varchar" and sql_type.params:
        too_long = pc.max(pc.utf8_length(result)).as_py()
        if too_long is not None and too_long > sql_type.params[0]:
            raise E.StringDataRightTruncation(
                f"value too long for type character varying({sql_type.params[0]}) in {what}")
    return result


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _text_of(data: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(data.type):
        return pa.chunked_array([pa.array([None if v is None else ("true" if v else "false")
                                           for v in data.to_pylist()], pa.large_string())])
    return pc.cast(data, pa.large_string())


def _parse_timestamps(data: pa.ChunkedArray, target: pa.DataType, what: str) -> pa.ChunkedArray:
    """ISO text with or without an offset; text without one is UTC for TIMESTAMPTZ."""
    try:
        if target.tz is None:
            return pc.cast(data, target)
        try:
            return pc.cast(data, target)
        except pa.ArrowInvalid:
            naive = pc.cast(data, pa.timestamp(target.unit))
            return pc.assume_timezone(naive, "UTC").cast(target)
    except pa.ArrowException as exc:
        raise from_arrow(exc, f"invalid input syntax for {what}") from exc


def _parse_times(data: pa.ChunkedArray, target: pa.DataType, what: str) -> pa.ChunkedArray:
    """'HH:MM[:SS[.ffffff]]' text, as PostgreSQL reads a TIME literal."""
    values = []
    for v in data.to_pylist():
        try:
            values.append(None if v is None else dt.time.fromisoformat(v.strip()))
        except ValueError as exc:
            raise E.DataError(f'invalid input syntax for type time: "{v}" ({what})',
                              sqlstate="22007", hint="write it as HH:MM[:SS[.ffffff]]") from exc
    return pa.chunked_array([pa.array(values, target)])


def _map_text(data: pa.ChunkedArray, fn, what: str, type_name: str) -> pa.ChunkedArray:
    values = []
    for v in data.to_pylist():
        if v is None:
            values.append(None)
            continue
        try:
            values.append(fn(v))
        except (ValueError, TypeError, AttributeError) as exc:
            raise E.InvalidTextRepresentation(
                f'invalid input syntax for type {type_name}: "{v}" ({what})') from exc
    return pa.chunked_array([pa.array(values, pa.large_string())])


def _map_binary(data: pa.ChunkedArray, what: str) -> pa.ChunkedArray:
    """Text into BYTEA: PostgreSQL's hex format (`\\x0102`), else the text's UTF-8 bytes."""
    values = []
    for v in data.to_pylist():
        if v is not None and v.startswith("\\x"):
            try:
                v = bytes.fromhex(v[2:])
            except ValueError as exc:
                raise E.InvalidTextRepresentation(f'invalid hexadecimal data for {what}: "{v}"') from exc
        values.append(v.encode() if isinstance(v, str) else v)
    return pa.chunked_array([pa.array(values, pa.large_binary())])


def _canonical_uuid(value) -> str:
    if isinstance(value, bytes) and len(value) == 16:
        return str(uuid.UUID(bytes=value))
    return str(uuid.UUID(str(value)))


def _checked_json(value: str) -> str:
    json.loads(value)
    return value


def _to_vector(data: pa.ChunkedArray, dim: int, what: str) -> pa.ChunkedArray:
    t = data.type
    if _is_text(t):
        values = []
        for text in data.to_pylist():
            if text is None:
                values.append(None)
                continue
            try:
                parsed = json.loads(text)
                if not isinstance(parsed, list) or not all(isinstance(x, (int, float)) for x in parsed):
                    raise ValueError
            except ValueError as exc:
                raise E.InvalidTextRepresentation(
                    f'invalid input syntax for type vector: "{text}" ({what})',
                    hint="write vectors as '[1, 2, 3]'") from exc
            values.append(parsed)
        data = pa.chunked_array([pa.array(values, pa.list_(pa.float32()))])
        t = data.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t)):
        raise E.DatatypeMismatch(f"{what} is of type vector({dim}) but the value is of type {t}")
    if pa.types.is_fixed_size_list(t):
        if t.list_size != dim:
            raise E.DataError(f"expected {dim} dimensions, not {t.list_size} ({what})")
    else:
        lengths = pc.list_value_length(data)
        wrong = pc.filter(lengths, pc.not_equal(lengths, dim))
        if len(wrong):
            raise E.DataError(f"expected {dim} dimensions, not {wrong[0].as_py()} ({what})")
    flat = pc.list_flatten(data)
    if flat.null_count:
        raise E.DataError(f"vector elements cannot be NULL ({what})")
    if pa.types.is_floating(flat.type) and len(flat) \
            and not pc.all(pc.is_finite(flat)).as_py():
        # as pgvector: a NaN or infinite element would make every distance to it meaningless
        raise E.DataError(f"NaN and infinite values are not allowed in a vector ({what})",
                          hint="replace them before storing the vector")
    try:
        return pc.cast(data, pa.list_(pa.field("item", pa.float32()), dim))
    except pa.ArrowException as exc:
        raise from_arrow(exc, f"invalid vector for {what}") from exc
