"""Values on the wire: Arrow result columns to PostgreSQL text/binary form, and parameters
from text/binary form to Python values for the engine.

Columns are encoded a whole column at a time (Arrow casts where the text forms agree with
PostgreSQL's, NumPy for fixed-width binary), so a result is never walked value by value in
Python where a vectorized form exists.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import struct
import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnilake import errors as E
from omnilake.catalog.types import OIDS, SQL_TYPE_KEY, SqlType, from_arrow

Encoded = list  # list[bytes | None], one per row

POSTGRES_EPOCH = dt.datetime(2000, 1, 1)
POSTGRES_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_EPOCH_DAYS = 10_957

# pg_type extras for names and sizes on the wire.
TYPE_SIZES = {16: 1, 17: -1, 20: 8, 21: 2, 23: 4, 25: -1, 114: -1, 700: 4, 701: 8, 1043: -1,
              1082: 4, 1083: 8, 1114: 8, 1184: 8, 1700: -1, 2950: 16, OIDS["vector"]: -1}
TEXT = OIDS["text"]
UNKNOWN = 705


def sql_type_of(field: pa.Field) -> SqlType | None:
    text = (field.metadata or {}).get(SQL_TYPE_KEY.encode())
    if text:
        return SqlType.parse(text.decode())
    try:
        return from_arrow(field.type)
    except E.Error:
        return None


PG_OID_KEY = b"omnilake.pg_oid"  # field metadata: a wire type of its own ("char", name)


def column_oid(field: pa.Field) -> int:
    pinned = (field.metadata or {}).get(PG_OID_KEY)
    if pinned:
        return int(pinned)
    element = _array_element(field)
    if element is not None:
        return ARRAY_OF.get(column_oid(element), TEXT)
    sql_type = sql_type_of(field)
    return sql_type.oid if sql_type is not None else TEXT


def _array_element(field: pa.Field) -> pa.Field | None:
    """The element field of a list column that is an SQL array (a vector is not one)."""
    t = field.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
            or pa.types.is_fixed_size_list(t)):
        return None
    if (field.metadata or {}).get(SQL_TYPE_KEY.encode()):
        return None  # a column with a declared SQL type (vector)
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
        return None
    return t.value_field


# -- text output ---------------------------------------------------------------------------
SMALL = 64  # below this many values, Python beats two Arrow casts (~15 us a column)


def _via_cast(column: pa.ChunkedArray) -> Encoded:
    if len(column) <= SMALL:  # str() of an int and UTF-8 of a string are what the casts give
        t = column.type
        if pa.types.is_integer(t):
            return [None if v is None else str(v).encode() for v in column.to_pylist()]
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return [None if v is None else v.encode() for v in column.to_pylist()]
    return column.cast(pa.large_string()).cast(pa.large_binary()).to_pylist()


def _each(fn: Callable) -> Callable[[pa.ChunkedArray], Encoded]:
    def encode(column: pa.ChunkedArray) -> Encoded:
        return [None if v is None else fn(v) for v in column.to_pylist()]
    return encode


def _float_text(v: float) -> bytes:
    if v != v:
        return b"NaN"
    if v in (float("inf"), float("-inf")):
        return b"Infinity" if v > 0 else b"-Infinity"
    text = repr(v)
    return (text[:-2] if text.endswith(".0") else text).encode()


def _floats_text(column: pa.ChunkedArray) -> Encoded:
    if pc.any(pc.is_nan(column)).as_py() or pc.any(pc.is_inf(column)).as_py():
        return _each(_float_text)(column)
    if pa.types.is_float32(column.type):
        return [None if v is None else str(np.float32(v)).removesuffix(".0").encode()
                for v in column.to_pylist()]
    return _via_cast(column)


def _time_text(t: dt.time) -> str:
    text = t.strftime("%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text


def _timestamp_text(v: dt.datetime) -> bytes:
    text = f"{v.date().isoformat()} {_time_text(v.time())}"
    if v.tzinfo is not None:
        offset = v.utcoffset() or dt.timedelta()
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        hours, mins = divmod(abs(minutes), 60)
        text += f"{sign}{hours:02d}" + (f":{mins:02d}" if mins else "")
    return text.encode()


# Microseconds of 0001-01-01 and of the end of 9999: Arrow writes the years between as
# PostgreSQL does (PostgreSQL writes earlier ones with BC).
_YEAR_1_US, _YEAR_10000_US = -62_135_596_800_000_000, 253_402_300_800_000_000
_EACH_TIMESTAMP = 16  # below this many values, Python beats the Arrow kernels


def _timestamps_text(column: pa.ChunkedArray) -> Encoded:
    """Microsecond timestamps (UTC or without a zone) as _timestamp_text writes them, through
    Arrow's cast to text ('2024-01-02 03:04:05.500000'): the fraction's trailing zeros
    dropped, and the dot with them, then '+00' for UTC. ~0.4 us a value against ~9 us for
    datetime objects formatted in Python (a time-series result is mostly timestamps)."""
    t = column.type
    if len(column) < _EACH_TIMESTAMP or t.unit != "us" or t.tz not in (None, "UTC"):
        return _each(_timestamp_text)(column)
    bounds = pc.min_max(column.cast(pa.int64()))
    if bounds["min"].is_valid and not (_YEAR_1_US <= bounds["min"].as_py()
                                       and bounds["max"].as_py() < _YEAR_10000_US):
        return _each(_timestamp_text)(column)
    # as wall-clock time: Arrow's cast of a zoned timestamp to text looks up the zone per
    # value (17x slower)
    text = column.cast(pa.int64()).cast(pa.timestamp("us")).cast(pa.large_string())
    text = pc.replace_substring_regex(text, r"\.?0*$", "+00" if t.tz is not None else "")
    return text.cast(pa.large_binary()).to_pylist()


def vector_text(values) -> bytes:
    return ("[" + ",".join(str(x).removesuffix(".0") for x in np.asarray(values, np.float32))
            + "]").encode()


def _generic_text(v) -> bytes:
    if isinstance(v, (list, tuple)):
        return ("{" + ",".join("NULL" if x is None else _generic_text(x).decode() for x in v)
                + "}").encode()
    if isinstance(v, bool):
        return b"t" if v else b"f"
    if isinstance(v, dict):
        return json.dumps(v, default=str).encode()
    if isinstance(v, dt.timedelta):
        return _interval_text(v)
    if isinstance(v, bytes):
        return b"\\x" + v.hex().encode()
    if isinstance(v, dt.datetime):
        return _timestamp_text(v)
    return str(v).encode()


def _interval_text(v: dt.timedelta) -> bytes:
    days, seconds = v.days, v.seconds
    parts = []
    if days:
        parts.append(f"{days} day" + ("s" if abs(days) != 1 else ""))
    if seconds or v.microseconds or not parts:
        hours, rem = divmod(seconds, 3600)
        minutes, secs = divmod(rem, 60)
        clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
        if v.microseconds:
            clock += f".{v.microseconds:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts).encode()


def _month_day_nano_text(v) -> bytes:
    months, days, nanos = v.months, v.days, v.nanoseconds
    parts = []
    years, months = divmod(months, 12)
    if years:
        parts.append(f"{years} year" + ("s" if abs(years) != 1 else ""))
    if months:
        parts.append(f"{months} mon" + ("s" if abs(months) != 1 else ""))
    if days:
        parts.append(f"{days} day" + ("s" if abs(days) != 1 else ""))
    if nanos or not parts:
        parts.append(_interval_text(dt.timedelta(microseconds=nanos // 1000)).decode())
    return " ".join(parts).encode()


_TEXT_BY_NAME: dict[str, Callable[[pa.ChunkedArray], Encoded]] = {
    "boolean": _each(lambda v: b"t" if v else b"f"),
    "smallint": _via_cast, "integer": _via_cast, "bigint": _via_cast,
    "real": _floats_text, "double precision": _floats_text,
    "numeric": _via_cast, "text": _via_cast, "varchar": _via_cast, "json": _via_cast,
    "uuid": _via_cast, "date": _via_cast,
    "bytea": _each(lambda v: b"\\x" + v.hex().encode()),
    "time": _each(lambda v: _time_text(v).encode()),
    "timestamp": _timestamps_text, "timestamptz": _timestamps_text,
    "vector": _each(vector_text),
}


def _per_array(element: pa.Field, encode_items, join) -> Callable[[pa.ChunkedArray], Encoded]:
    """An encoder of list values: each list's items encoded as one column, then joined."""
    def encode(column: pa.ChunkedArray) -> Encoded:
        out = []
        for value in column.to_pylist():
            if value is None:
                out.append(None)
                continue
            items = encode_items(pa.chunked_array([pa.array(value, element.type)])) if value else []
            out.append(join(items))
        return out
    return encode


def _array_text(element: pa.Field) -> Callable[[pa.ChunkedArray], Encoded]:
    """PostgreSQL's array text form: {a,"b c",NULL}."""
    return _per_array(element, text_encoder(element), lambda items: b"{" + b",".join(
        b"NULL" if i is None else _quote_item(i) for i in items) + b"}")


def _quote_item(item: bytes) -> bytes:
    if item and not any(c in item for c in b'{},"\\ \t\n') and item.upper() != b"NULL":
        return item
    return b'"' + item.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def text_encoder(field: pa.Field) -> Callable[[pa.ChunkedArray], Encoded]:
    element = _array_element(field)
    if element is not None and column_oid(field) != TEXT:
        return _array_text(element)
    sql_type = sql_type_of(field)
    if sql_type is not None and sql_type.name in _TEXT_BY_NAME:
        if sql_type.name == "json" and not (pa.types.is_string(field.type)
                                            or pa.types.is_large_string(field.type)):
            return _each(lambda v: json.dumps(v).encode())
        return _TEXT_BY_NAME[sql_type.name]
    if pa.types.is_interval(field.type):
        return _each(_month_day_nano_text)
    return _each(_generic_text)


# -- binary output -------------------------------------------------------------------------
def _fixed(fmt: str, numpy_dtype: str) -> Callable[[pa.ChunkedArray], Encoded]:
    size = struct.calcsize(fmt)

    def encode(column: pa.ChunkedArray) -> Encoded:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        data = np.asarray(array.fill_null(0)).astype(numpy_dtype).tobytes()
        out = [data[i:i + size] for i in range(0, len(data), size)]
        if array.null_count:
            for i, valid in enumerate(array.is_valid().to_pylist()):
                if not valid:
                    out[i] = None
        return out
    return encode


def _micros_since_2000(column: pa.ChunkedArray) -> Encoded:
    micros = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
    return _fixed("!q", ">i8")(pc.subtract(micros, _EPOCH_US))


def _days_since_2000(column: pa.ChunkedArray) -> Encoded:
    return _fixed("!i", ">i4")(pc.subtract(column.cast(pa.int32()), _EPOCH_DAYS))


def _time_micros(column: pa.ChunkedArray) -> Encoded:
    return _fixed("!q", ">i8")(column.cast(pa.time64("us")).cast(pa.int64()))


def numeric_binary(value: decimal.Decimal) -> bytes:
    """PostgreSQL's numeric send format: base-10000 digits, weight, sign, display scale."""
    sign, digits, exponent = value.as_tuple()
    text = "".join(map(str, digits))
    if exponent >= 0:
        integer, fraction, scale = text + "0" * exponent, "", 0
    else:
        scale = -exponent
        text = text.rjust(scale + 1, "0")  # 0.0001: at least one integer digit
        integer, fraction = text[:-scale], text[-scale:]
    integer = integer.lstrip("0")
    integer = "0" * (-len(integer) % 4) + integer
    fraction = fraction + "0" * (-len(fraction) % 4)
    groups = [int(integer[i:i + 4]) for i in range(0, len(integer), 4)] + \
             [int(fraction[i:i + 4]) for i in range(0, len(fraction), 4)]
    weight = len(integer) // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f"!hhHH{len(groups)}H", len(groups), weight, 0x4000 if sign else 0,
                       scale, *groups)


def vector_binary(values) -> bytes:
    array = np.asarray(values, dtype=">f4")
    return struct.pack("!hh", len(array), 0) + array.tobytes()


_BINARY_BY_NAME: dict[str, Callable[[pa.ChunkedArray], Encoded]] = {
    "boolean": _each(lambda v: b"\x01" if v else b"\x00"),
    "smallint": _fixed("!h", ">i2"), "integer": _fixed("!i", ">i4"),
    "bigint": _fixed("!q", ">i8"), "real": _fixed("!f", ">f4"),
    "double precision": _fixed("!d", ">f8"),
    "numeric": _each(numeric_binary),
    "text": _via_cast, "varchar": _via_cast, "json": _via_cast,
    "bytea": lambda column: column.cast(pa.large_binary()).to_pylist(),
    "uuid": _each(lambda v: uuid.UUID(v).bytes),
    "date": _days_since_2000,
    "time": _time_micros,
    "timestamp": _micros_since_2000, "timestamptz": _micros_since_2000,
    "vector": _each(vector_binary),
}


def _array_binary(element: pa.Field, element_oid: int) -> Callable[[pa.ChunkedArray], Encoded]:
    """PostgreSQL's array send form: dimensions, null flag, element type, then the items."""
    def join(items: list) -> bytes:
        parts = [struct.pack("!iiI", 1, int(any(i is None for i in items)), element_oid),
                 struct.pack("!ii", len(items), 1)]
        for i in items:
            parts.append(b"\xff\xff\xff\xff" if i is None else struct.pack("!i", len(i)) + i)
        return b"".join(parts)
    return _per_array(element, binary_encoder(element), join)


def binary_encoder(field: pa.Field) -> Callable[[pa.ChunkedArray], Encoded]:
    element = _array_element(field)
    if element is not None and column_oid(field) != TEXT:
        return _array_binary(element, column_oid(element))
    if column_oid(field) == 26:  # oid: four bytes, unsigned
        return _fixed("!I", ">u4")
    sql_type = sql_type_of(field)
    if sql_type is None or sql_type.name not in _BINARY_BY_NAME:
        return text_encoder(field)  # sent as text (its OID is text)
    return _BINARY_BY_NAME[sql_type.name]


# -- parameters in -------------------------------------------------------------------------
def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("t", "true", "yes", "on", "1", "y"):
        return True
    if value in ("f", "false", "no", "off", "0", "n"):
        return False
    raise E.InvalidTextRepresentation(f'invalid input syntax for type boolean: "{text}"')


def _bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return text.encode()


def _timestamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    return value


def parse_vector(text: str) -> list[float]:
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise E.InvalidTextRepresentation(f'invalid input syntax for type vector: "{text[:60]}"',
                                          hint="write a vector as '[1,2,3]'")
    return [float(x) for x in body[1:-1].split(",")] if body[1:-1].strip() else []


_TEXT_IN: dict[int, Callable[[str], object]] = {
    16: _bool, 20: int, 21: int, 23: int, 26: int, 700: float, 701: float,
    1700: decimal.Decimal, 17: _bytea, 1082: dt.date.fromisoformat, 1083: dt.time.fromisoformat,
    1114: _timestamp, 1184: _timestamp, 2950: uuid.UUID, OIDS["vector"]: parse_vector,
}


def _numeric_from_binary(data: bytes) -> decimal.Decimal:
    count, weight, sign, scale = struct.unpack_from("!hhHH", data)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    digits = struct.unpack_from(f"!{count}H", data, 8)
    value = decimal.Decimal(0)
    for i, group in enumerate(digits):
        value += decimal.Decimal(group).scaleb(4 * (weight - i))
    value = value.quantize(decimal.Decimal(1).scaleb(-scale)) if scale else value
    return -value if sign == 0x4000 else value


def _vector_from_binary(data: bytes) -> list[float]:
    dim, _ = struct.unpack_from("!hh", data)
    return np.frombuffer(data, ">f4", dim, 4).astype(np.float32).tolist()


_BINARY_IN: dict[int, Callable[[bytes], object]] = {
    16: lambda b: b != b"\x00", 21: lambda b: struct.unpack("!h", b)[0],
    23: lambda b: struct.unpack("!i", b)[0], 26: lambda b: struct.unpack("!I", b)[0],
    20: lambda b: struct.unpack("!q", b)[0],
    700: lambda b: struct.unpack("!f", b)[0], 701: lambda b: struct.unpack("!d", b)[0],
    1700: _numeric_from_binary, 17: bytes, 25: lambda b: b.decode(), 1043: lambda b: b.decode(),
    114: lambda b: b.decode(), 3802: lambda b: b[1:].decode(),
    1082: lambda b: POSTGRES_EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", b)[0]),
    1114: lambda b: POSTGRES_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0]),
    1184: lambda b: (POSTGRES_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0]))
    .replace(tzinfo=dt.timezone.utc),
    1083: lambda b: (dt.datetime.min + dt.timedelta(microseconds=struct.unpack("!q", b)[0])).time(),
    2950: lambda b: uuid.UUID(bytes=b), OIDS["vector"]: _vector_from_binary,
}


# element type oid -> its array type oid
ARRAY_OF = {21: 1005, 23: 1007, 20: 1016, 25: 1009, 1043: 1009, 700: 1021, 701: 1022, 16: 1000,
            2950: 2951, 1700: 1231, 1082: 1182, 1114: 1115, 1184: 1185, 17: 1001, 18: 1002,
            26: 1028}

# array type oid -> element type oid (int2, int4, int8, text, varchar, float4/8, oid, bool, uuid)
ARRAY_ELEMENTS = {1005: 21, 1007: 23, 1016: 20, 1009: 25, 1015: 1043, 1021: 700, 1022: 701,
                  1028: 26, 1000: 16, 2951: 2950, 1231: 1700}


def _array_from_binary(data: bytes, number: int) -> list:
    ndim, _flags, element = struct.unpack_from("!iiI", data)
    if ndim == 0:
        return []
    if ndim != 1:
        raise E.NotSupportedError(f"parameter ${number}: only one-dimensional arrays are supported")
    size, _lower = struct.unpack_from("!ii", data, 12)
    pos, out = 20, []
    for _ in range(size):
        length = struct.unpack_from("!i", data, pos)[0]
        pos += 4
        if length == -1:
            out.append(None)
            continue
        out.append(decode_parameter(data[pos:pos + length], element, True, number))
        pos += length
    return out


def _array_from_text(text: str, element: int, number: int) -> list:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise E.InvalidTextRepresentation(f'malformed array literal: "{text[:60]}"')
    items = [i.strip() for i in body[1:-1].split(",")] if body[1:-1].strip() else []
    return [None if i.upper() == "NULL" else
            decode_parameter(i.strip('"').encode(), element, False, number) for i in items]


def decode_parameter(data: bytes | None, oid: int, binary: bool, number: int):
    """A parameter value from the wire, as the Python value the engine binds."""
    if data is None:
        return None
    try:
        if oid in ARRAY_ELEMENTS:
            return _array_from_binary(data, number) if binary else \
                _array_from_text(data.decode(), ARRAY_ELEMENTS[oid], number)
        if binary:
            decode = _BINARY_IN.get(oid)
            if decode is None:
                raise E.NotSupportedError(
                    f"binary format for parameter ${number} of type oid {oid} is not supported",
                    hint="send this parameter in text format")
            return decode(data)
        text = data.decode()
        decode = _TEXT_IN.get(oid)
        return text if decode is None else decode(text)
    except E.Error:
        raise
    except UnicodeDecodeError:
        raise E.Error('invalid byte sequence for encoding "UTF8"', sqlstate="22021") from None
    except (ValueError, struct.error, decimal.InvalidOperation) as exc:
        raise E.InvalidTextRepresentation(
            f"invalid value for parameter ${number} (type oid {oid}): {exc}") from None
