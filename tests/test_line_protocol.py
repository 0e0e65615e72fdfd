"""The line-protocol parser: escapes, quoted strings, value kinds, precisions, duplicates,
bad lines (by line number)."""

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnilake.server.line_protocol import LineProtocolError, parse

NOW = 1_700_000_000_123_456_789


def table(text, precision="ns", name=None):
    tables = parse(text, precision, now_ns=NOW).tables()
    return tables[name or next(iter(tables))]


def test_basic_point_with_tags_fields_and_timestamp():
    t = table("cpu,host=a,region=eu usage=1.5,count=3i,big=7u,ok=t,msg=\"hi\" 1700000000000000000")
    assert t.column_names == ["time", "host", "region", "usage", "count", "big", "ok", "msg"]
    assert t.schema.field("time").type == pa.timestamp("us", "UTC")
    assert t.to_pylist() == [{
        "time": dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc),
        "host": "a", "region": "eu", "usage": 1.5, "count": 3, "big": 7, "ok": True,
        "msg": "hi"}]
    assert [t.schema.field(c).type for c in ("usage", "count", "big", "ok", "msg")] == \
        [pa.float64(), pa.int64(), pa.int64(), pa.bool_(), pa.string()]


def test_escapes_and_quoted_strings():
    text = ('we\\ ather\\,x,lo\\=c=San\\ Fran\\,cisco,k\\ 2=v\\=1 '
            'te\\ mp=82,note="a \\"quoted\\" \\\\ back, with = and spaces",f\\,x=1i 1')
    batch = parse(text, now_ns=NOW)
    (name,) = batch.measurements
    assert name == "we ather,x"
    row = batch.tables()[name].to_pylist()[0]
    assert row["lo=c"] == "San Fran,cisco" and row["k 2"] == "v=1"
    assert row["te mp"] == 82.0 and row["f,x"] == 1
    assert row["note"] == 'a "quoted" \\ back, with = and spaces'


@pytest.mark.parametrize("text, expected", [
    ("t,h=a v=t", True), ("t,h=a v=T", True), ("t,h=a v=true", True), ("t,h=a v=True", True),
    ("t,h=a v=TRUE", True), ("t,h=a v=f", False), ("t,h=a v=False", False),
    ("t,h=a v=FALSE", False), ("t,h=a v=-12i", -12), ("t,h=a v=0u", 0),
    ("t,h=a v=9223372036854775807i", 2**63 - 1), ("t,h=a v=-1.5e3", -1500.0),
    ("t,h=a v=.5", 0.5), ("t,h=a v=1", 1.0), ('t,h=a v=""', ""),
])
def test_field_value_kinds(text, expected):
    value = table(text).column("v")[0].as_py()
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("precision, stamp, micros", [
    ("ns", "1700000000123456789", 1700000000123456),
    ("n", "1700000000123456789", 1700000000123456),
    ("us", "1700000000123456", 1700000000123456),
    ("u", "1700000000123456", 1700000000123456),
    ("ms", "1700000000123", 1700000000123000),
    ("s", "1700000000", 1700000000000000),
    ("m", "28333333", 28333333 * 60_000_000),
    ("h", "472222", 472222 * 3_600_000_000),
    ("s", "-86400", -86400_000_000),
])
def test_every_precision(precision, stamp, micros):
    t = table(f"m v=1 {stamp}", precision)
    assert t.column("time").cast(pa.int64())[0].as_py() == micros


def test_missing_timestamp_takes_arrival_time_in_precision():
    assert table("m v=1").column("time").cast(pa.int64())[0].as_py() == NOW // 1000
    assert table("m v=1", "s").column("time").cast(pa.int64())[0].as_py() == \
        NOW // 10**9 * 10**6


def test_duplicate_points_merge_fields_last_wins():
    text = "m,h=a x=1,y=2 10\nm,h=a y=3,z=4i 10\nm,h=b x=5 10\nm,h=a x=6 11\n"
    rows = {(r["h"], r["time"]): r for r in table(text, "s").to_pylist()}
    assert len(rows) == 3
    first = [r for r in rows.values() if r["h"] == "a" and r["y"] is not None][0]
    assert (first["x"], first["y"], first["z"]) == (1.0, 3.0, 4)
    # tag order does not make a different series
    assert parse("m,a=1,b=2 v=1 5\nm,b=2,a=1 v=2 5", now_ns=NOW).tables()["m"].num_rows == 1


def test_blank_lines_comments_crlf_and_several_measurements():
    text = "# a comment\r\n\r\ncpu,h=a u=1 1\r\nmem,h=a free=2i 1\n\n  \ncpu,h=b u=2 2\n"
    batch = parse(text, now_ns=NOW)
    assert batch.lines == 3
    tables = batch.tables()
    assert tables["cpu"].num_rows == 2 and tables["mem"].column("free").to_pylist() == [2]


def test_sparse_fields_are_null():
    t = table("m a=1 1\nm b=\"x\" 2\n", "s")
    assert t.column("a").to_pylist() == [1.0, None] and t.column("b").to_pylist() == [None, "x"]


@pytest.mark.parametrize("text, line, fragment", [
    ("m v=1 1\nm v= 2\n", 2, 'field "v" has no value'),
    ("m v=1\nm\n", 2, "expected"),
    ("m v=1\n\nm,h v=1\n", 3, "invalid tag"),
    ("m v=1 abc", 1, "invalid timestamp"),
    ("m v=1i\nm v=1.5", 2, "field type conflict"),
    ("m v=1\nm v=\"x\"", 2, "field type conflict"),
    ('m v="unterminated', 1, "unterminated string"),
    ("m v=12x", 1, "invalid value"),
    ("m v=1_000", 1, "invalid value"),
    ("m v=nan", 1, "invalid value"),
    ("m v=9223372036854775808i", 1, "out of range"),
    ("m v=-1u", 1, "invalid unsigned"),
    ("m v=1 1 extra", 1, "unexpected text"),
    (",h=a v=1", 1, "missing measurement"),
    ("m,h=a,h=b v=1", 1, "appears twice"),
    ("m,h=a h=1", 1, "cannot also be a field"),
    ("m time=1", 1, 'cannot be named "time"'),
    ("m v=1 99999999999999999999", 1, "out of range"),
    ("m,h= v=1", 1, "has no value"),
])
def test_bad_lines_name_their_line(text, line, fragment):
    with pytest.raises(LineProtocolError) as info:
        parse(text, now_ns=NOW)
    assert info.value.line == line and fragment in str(info.value)
    assert str(info.value).startswith(f"line {line}:") and info.value.sqlstate == "22P02"


def test_bad_precision_and_bad_utf8():
    with pytest.raises(Exception) as info:
        parse("m v=1", "fortnight")
    assert getattr(info.value, "sqlstate", "") == "22023"
    with pytest.raises(LineProtocolError) as bad:
        parse(b"m v=1\nm s=\"\xff\"", now_ns=NOW)
    assert bad.value.line == 2


keys = st.text(st.sampled_from("ab ,=\\\"xyzé"), min_size=1, max_size=6).filter(
    lambda s: s != "time" and not s.startswith("#") and s.strip(" ") == s)
strings = st.text(st.sampled_from('ab ,="\\\nxé'), max_size=8).filter(lambda s: "\n" not in s)


def escape_key(s):
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


@settings(max_examples=150, derandomize=True, deadline=None)
@given(measurement=keys, tag=st.tuples(keys, keys), field=keys, value=strings,
       number=st.integers(-2**63, 2**63 - 1))
def test_round_trip_of_escaped_names_and_strings(measurement, tag, field, value, number):
    if field == tag[0] or "\\" in measurement and measurement.endswith("\\"):
        return
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    line = (f"{escape_key(measurement)},{escape_key(tag[0])}={escape_key(tag[1])} "
            f'{escape_key(field)}="{quoted}",n={number}i 42')
    if field == "n" or tag[0] == "n":
        return
    batch = parse(line, now_ns=NOW)
    (row,) = batch.tables()[measurement].to_pylist()
    assert row[tag[0]] == tag[1] and row[field] == value and row["n"] == number


def canonical(batch):
    out = {}
    for name, t in batch.tables().items():
        rows = t.to_pylist()
        out[name] = (sorted(t.column_names), t.schema.field("time").type,
                     sorted(rows, key=lambda r: sorted((k, str(v)) for k, v in r.items())),
                     {c: str(t.schema.field(c).type) for c in t.column_names})
    return out


value_of = {"a": st.floats(-1e9, 1e9, allow_nan=False).map(repr),
            "b": st.integers(-2**63, 2**63 - 1).map(lambda i: f"{i}i"),
            "c": st.sampled_from(["t", "F", "true", "FALSE"]),
            "d": st.integers(0, 2**63 - 1).map(lambda i: f"{i}u")}
lp_line = st.tuples(
    st.sampled_from(["cpu", "mem"]),
    st.dictionaries(st.sampled_from(["host", "dc"]), st.sampled_from(["x", "y", "z"])),
    st.lists(st.sampled_from(list(value_of)), min_size=1, max_size=4, unique=True).flatmap(
        lambda keys: st.tuples(*[st.tuples(st.just(k), value_of[k]) for k in keys])),
    st.one_of(st.none(), st.integers(-10**12, 10**12)),
    st.sampled_from(["", " ", "\r"]))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(lines=st.lists(lp_line, min_size=1, max_size=25),
       mixed=st.booleans(), precision=st.sampled_from(["ns", "us", "s", "h"]))
def test_columnar_fast_path_equals_line_by_line(lines, mixed, precision):
    from omnilake.server.line_protocol import PRECISIONS, _parse_lines
    text = "\n".join(
        f"{m}{''.join(f',{k}={v}' for k, v in tags.items())} "
        + ",".join(f"{k}={'1.5' if mixed and k == 'b' and i % 3 == 1 else v}" for k, v in fields)
        + ("" if ts is None else f" {ts}") + tail
        for i, (m, tags, fields, ts, tail) in enumerate(lines))
    try:
        expected = _parse_lines(text, PRECISIONS[precision], NOW - NOW % PRECISIONS[precision])
    except LineProtocolError as exc:
        with pytest.raises(LineProtocolError) as info:
            parse(text, precision, now_ns=NOW)
        assert info.value.line == exc.line and str(info.value) == str(exc)
        return
    got = parse(text, precision, now_ns=NOW)
    assert got.lines == expected.lines
    assert canonical(got) == canonical(expected)
    for name, m in got.measurements.items():
        assert m.kinds == expected.measurements[name].kinds
        assert m.first_line == expected.measurements[name].first_line


def test_fast_path_is_taken_for_plain_bodies():
    batch = parse("cpu,host=a u=1,n=2i 1\ncpu,host=b u=2,n=3i 2\nmem,host=a f=1u 1\n", now_ns=NOW)
    assert all(m.prebuilt is not None for m in batch.measurements.values())
    batch = parse("cpu,host=a u=1 1\ncpu,host=a u=2 1\n", now_ns=NOW)  # duplicate: declined
    assert batch.measurements["cpu"].prebuilt is None
    assert batch.tables()["cpu"].column("u").to_pylist() == [2.0]


def test_points_equal_after_truncation_to_microseconds_are_one_point():
    t = table("m v=1 1000000001\nm v=2 1000000999\nm v=3 1000001000\n")
    assert t.column("v").to_pylist() == [2.0, 3.0]
