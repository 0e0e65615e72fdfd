"""Wire value codecs: PostgreSQL's text and binary forms, checked value by value."""

import datetime as dt
import decimal
import struct
import uuid

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from omnilake import errors as E
from omnilake.catalog.types import SQL_TYPE_KEY
from omnilake.server.codecs import (binary_encoder, column_oid, decode_parameter, numeric_binary,
                                    text_encoder)


def _field(arrow_type, sql_type=None):
    return pa.field("c", arrow_type, metadata={SQL_TYPE_KEY: sql_type} if sql_type else None)


def _text(values, arrow_type, sql_type=None):
    return text_encoder(_field(arrow_type, sql_type))(pa.chunked_array([pa.array(values, arrow_type)]))


def _binary(values, arrow_type, sql_type=None):
    return binary_encoder(_field(arrow_type, sql_type))(pa.chunked_array([pa.array(values, arrow_type)]))


def test_text_forms_match_postgres():
    assert _text([True, False, None], pa.bool_()) == [b"t", b"f", None]
    assert _text([1, -2], pa.int64()) == [b"1", b"-2"]
    assert _text([1.5, float("nan"), float("inf"), 2.0], pa.float64()) == [b"1.5", b"NaN", b"Infinity", b"2"]
    assert _text([0.1], pa.float32()) == [b"0.1"]
    assert _text([decimal.Decimal("1.50")], pa.decimal128(5, 2)) == [b"1.50"]
    assert _text([b"\x00\xff"], pa.large_binary()) == [b"\\x00ff"]
    assert _text([dt.datetime(2024, 1, 2, 3, 4, 5, 500000)], pa.timestamp("us")) == [b"2024-01-02 03:04:05.5"]
    assert _text([dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC")) == \
        [b"2024-01-02 00:00:00+00"]
    assert _text([[1.0, 2.5, -3.0]], pa.list_(pa.float32(), 3), "vector(3)") == [b"[1,2.5,-3]"]
    assert _text([["a", "b c", None]], pa.list_(pa.large_string())) == [b'{a,"b c",NULL}']


def test_binary_forms_match_postgres():
    assert _binary([1, None], pa.int32()) == [struct.pack("!i", 1), None]
    assert _binary([2.5], pa.float64()) == [struct.pack("!d", 2.5)]
    assert _binary([dt.date(2000, 1, 2)], pa.date32()) == [struct.pack("!i", 1)]
    assert _binary([dt.datetime(2000, 1, 1, 0, 0, 1)], pa.timestamp("us")) == [struct.pack("!q", 1_000_000)]
    u = uuid.uuid4()
    assert _binary([str(u)], pa.large_string(), "uuid") == [u.bytes]
    assert _binary([[1.0, 2.0]], pa.list_(pa.float32(), 2), "vector(2)") == \
        [struct.pack("!hh", 2, 0) + np.array([1, 2], ">f4").tobytes()]


def test_array_and_vector_type_oids():
    assert column_oid(_field(pa.list_(pa.int64()))) == 1016
    assert column_oid(_field(pa.list_(pa.large_string()))) == 1009
    assert column_oid(_field(pa.list_(pa.float32(), 3), "vector(3)")) == 16385


@settings(max_examples=200, derandomize=True)
@given(st.decimals(min_value=-10**12, max_value=10**12, places=4, allow_nan=False, allow_infinity=False))
def test_numeric_binary_round_trips(value):
    encoded = numeric_binary(value)
    assert decode_parameter(encoded, 1700, True, 1) == value


@pytest.mark.parametrize("oid, text, expected", [
    (16, "t", True), (20, "42", 42), (701, "1.5", 1.5), (1700, "12.30", decimal.Decimal("12.30")),
    (17, "\\x00ff", b"\x00\xff"), (1082, "2024-02-03", dt.date(2024, 2, 3)),
    (16385, "[1,2,3]", [1.0, 2.0, 3.0]), (1007, "{1,2,NULL}", [1, 2, None]), (0, "anything", "anything"),
])
def test_text_parameters(oid, text, expected):
    assert decode_parameter(text.encode(), oid, False, 1) == expected


@pytest.mark.parametrize("oid, data", [(20, b"\x00\x01"), (23, b"abc"), (16385, b"[1,2")])
def test_bad_binary_parameters_are_data_errors(oid, data):
    with pytest.raises(E.Error) as info:
        decode_parameter(data, oid, oid != 16385, 1)
    assert info.value.sqlstate in ("22P02", "22000")


def test_unsupported_binary_parameter_type_says_what_to_do():
    with pytest.raises(E.NotSupportedError, match="text format"):
        decode_parameter(b"\x00", 600, True, 1)  # point


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), max_size=80),
       st.lists(st.one_of(st.none(), st.text()), max_size=80))
def test_small_columns_encode_as_the_arrow_casts_do(ints, texts):
    """Columns of up to codecs.SMALL values skip the Arrow casts: same bytes either way."""
    def cast(column):
        return column.cast(pa.large_string()).cast(pa.large_binary()).to_pylist()
    for values, types, sql in ((ints, (pa.int64(), pa.int32(), pa.int16()), None),
                               (texts, (pa.string(), pa.large_string(), pa.string_view()), None)):
        for arrow_type in types:
            if arrow_type in (pa.int32(), pa.int16()):
                bits = 31 if arrow_type == pa.int32() else 15
                values = [None if v is None else v % (2 ** bits) for v in values]
            column = pa.chunked_array([pa.array(values, arrow_type)])
            assert text_encoder(_field(arrow_type, sql))(column) == cast(column)
            if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
                assert binary_encoder(_field(arrow_type, sql))(column) == cast(column)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999),
                          st.integers(0, 10**6).map(lambda n: n * 1_000_000),  # whole seconds
                          st.integers(-2**63 + 1, 2**63 - 1)), max_size=60),
       st.sampled_from([None, "UTC"]))
def test_timestamp_columns_encode_as_each_value_would(micros, zone):
    """Columns of many timestamps go through Arrow's cast to text: the same bytes as each
    value formatted on its own (years outside 1-9999 are written value by value)."""
    from omnilake.server.codecs import _each, _timestamp_text
    arrow_type = pa.timestamp("us", tz=zone)
    in_python = []
    for value in micros:  # (Arrow cannot make datetimes of every int64: those stay out)
        try:
            pa.scalar(value, arrow_type).as_py()
            in_python.append(value)
        except (ValueError, OverflowError):
            pass
    column = pa.chunked_array([pa.array(in_python, arrow_type)])
    sql = "timestamptz" if zone else "timestamp"
    assert text_encoder(_field(arrow_type, sql))(column) == _each(_timestamp_text)(column)
