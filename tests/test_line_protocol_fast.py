"""The line-protocol fast path (whole-body NumPy/Arrow) against the exact line-by-line parser:
same tables (columns, their order, types, rows and row order), same kinds and first lines,
same error for a bad body; lines the fast path leaves to the exact parser merge in."""

import pyarrow as pa
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from omnilake.server import line_protocol as lp
from omnilake.server.line_protocol import PRECISIONS, LineProtocolError, parse

NOW = 1_700_000_000_123_456_789


def exact(text: str, precision: str):
    scale = PRECISIONS[precision]
    return lp._parse_lines(text, scale, NOW - NOW % scale)


def assert_same(got: lp.Batch, expected: lp.Batch) -> None:
    assert got.lines == expected.lines
    assert list(got.measurements) == list(expected.measurements)
    for name, want in expected.measurements.items():
        m = got.measurements[name]
        assert list(m.kinds.items()) == list(want.kinds.items())
        assert list(m.tag_keys) == list(want.tag_keys)
        assert m.first_line == want.first_line
        table, wanted = m.table(), want.table()
        assert table.schema == wanted.schema
        assert table.equals(wanted), (table.to_pylist(), wanted.to_pylist())


def check(text: str, precision: str = "ns") -> lp.Batch | None:
    """parse() equals the exact parser (result or error); returns the fast path's own batch
    (None when it declined), which must equal it too."""
    scale = PRECISIONS[precision]
    try:
        expected = exact(text, precision)
    except LineProtocolError as exc:
        with pytest.raises(LineProtocolError) as info:
            parse(text, precision, now_ns=NOW)
        assert info.value.line == exc.line and str(info.value) == str(exc)
        assert lp._parse_fast(text.encode(), scale, NOW - NOW % scale) is None
        return None
    assert_same(parse(text, precision, now_ns=NOW), expected)
    assert_same(parse(text.encode(), precision, now_ns=NOW), expected)
    fast = lp._parse_fast(text.encode(), scale, NOW - NOW % scale)
    if fast is not None:
        assert_same(fast, expected)
    return fast


# -- random bodies ---------------------------------------------------------------------------
names = st.sampled_from(["cpu", "mem", "disk", "time", "é"])
tag_keys = st.sampled_from(["host", "dc", "rack", "time", "v"])
tag_values = st.sampled_from(["a", "b", "x-1", "é", "us-east-1", "a=b", ""])
field_keys = st.sampled_from(["v", "w", "usage_user", "n", "host", "time"])
# in plain lines each field keeps one kind, so that most bodies are valid
good_values = {
    "v": st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr), st.sampled_from(
        ["1", "-0", ".5", "1.", "+1.5", "1e5", "1E-5", "-2.5e+3", "007", "0"])),
    "w": st.integers(-2**63, 2**63 - 1).map(lambda i: f"{i}i"),
    "n": st.integers(0, 2**63 - 1).map(lambda i: f"{i}u"),
    "usage_user": st.sampled_from(
        ["t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"]),
}
any_good_value = st.one_of(*good_values.values())
odd_values = st.sampled_from([
    "nan", "inf", "-inf", "1e400", "tru", "1_000", "0x10", "0x1fi", "+5i", "-1u", "1.5i",
    "9223372036854775808i", "9223372036854775808u", "i", "u", "-", "٣", "12x", '"s"',
    '"a b,c=d"', '"q\\"x"', ""])
stamps = st.one_of(
    st.none(), st.integers(-10**15, 10**15).map(str),
    st.sampled_from(["0", "-1", "999", "1000", "1700000000000000000", "9223372036854775807",
                     "-9223372036854775808", "0x10", "+5", "1_0", "00012", "abc", "٣"]))
separators = st.sampled_from([" "] * 12 + ["  ", "\t"])


@st.composite
def a_line(draw, odd: bool, index: int = 0):
    """One line; with odd=True it may be one the fast path leaves or refuses."""
    name = draw(names)
    tags = draw(st.lists(st.tuples(tag_keys, tag_values), max_size=3))
    if not odd:
        tags = [(k, v) for k, v in tags if v and "=" not in v and k not in ("time", "v")]
        tags = list(dict(tags).items())
    keys = draw(st.lists(field_keys, min_size=1, max_size=4, unique=not odd))
    if not odd:
        keys = [k for k in keys if k in good_values] or ["v"]
        values = [draw(good_values[k]) for k in keys]
    else:
        values = [draw(st.one_of(any_good_value, odd_values)) for _ in keys]
    if odd:
        stamp = draw(stamps)
    else:  # mostly distinct times (lines of one series at one time are duplicate points)
        base = draw(st.sampled_from([-10**6, 0, 10**6, 2 * 10**6]))  # in range for "h" too
        stamp = draw(st.sampled_from([None] + [str(base + index * 1000)] * 4))
    space = draw(separators) if odd else " "
    line = (name + "".join(f",{k}={v}" for k, v in tags) + space
            + ",".join(f"{k}={v}" for k, v in zip(keys, values))
            + ("" if stamp is None else space + stamp))
    if odd:
        line = draw(st.sampled_from(["", " ", "\r", "\t"])) + line + draw(
            st.sampled_from(["", " ", "\r", " \r"]))
    return line


escaped_lines = st.sampled_from([
    'cpu,host=a msg="hello world, x=1" 7',
    'cpu,host=b v=1,msg="q\\"uote" 8',
    'cpu,ho\\ st=a v=2 9',
    'c\\,pu,host=a v=3 10',
    'mem,host=a free=5i,note="x" 11',
    'cpu,host=a v="text" 12',
])
specials = st.sampled_from(["", "# a comment", "#cpu v=1", "   ", "\r"])


@st.composite
def bodies(draw, odd_share: float):
    lines = []
    for index in range(draw(st.integers(1, 20))):
        roll = draw(st.floats(0, 1))
        if roll < odd_share / 3:
            lines.append(draw(escaped_lines))
        elif roll < odd_share * 2 / 3:
            lines.append(draw(specials))
        elif roll < odd_share:
            lines.append(draw(a_line(odd=True)))
        else:
            lines.append(draw(a_line(odd=False, index=index)))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(
        st.sampled_from(["", "\n", "\n\n"]))


precisions = st.sampled_from(["ns", "us", "ms", "s", "h"])


def outcome(text: str, precision: str) -> str:
    """Checks the body; says which way it went (for --hypothesis-show-statistics)."""
    try:
        exact(text, precision)
        bad = False
    except LineProtocolError:
        bad = True
    fast = check(text, precision)
    return "bad body" if bad else "declined" if fast is None else "fast path"


@settings(max_examples=400, derandomize=True, deadline=None)
@given(text=bodies(odd_share=0.0), precision=precisions)
def test_plain_bodies_fast_equals_exact(text, precision):
    event(outcome(text, precision))


@settings(max_examples=400, derandomize=True, deadline=None)
@given(text=bodies(odd_share=0.3), precision=precisions)
def test_mixed_bodies_fast_equals_exact(text, precision):
    event(outcome(text, precision))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(text=bodies(odd_share=1.0), precision=precisions)
def test_odd_bodies_fast_equals_exact(text, precision):
    event(outcome(text, precision))


# -- the fast path is taken, and merges what it leaves to the exact parser -------------------
def test_uniform_body_is_read_by_the_fast_path():
    text = "\n".join(f"cpu,host=h{i % 7},dc=d{i % 3} u={i}.5,n={i}i,ok=t,big={i}u {i * 1000}"
                     for i in range(500))
    fast = check(text)
    assert fast is not None and fast.measurements["cpu"].prebuilt is not None
    assert fast.tables()["cpu"].num_rows == 500


@pytest.mark.parametrize("text", [
    # escaped and quoted lines among plain ones, same measurement
    'cpu,host=a v=1 1\ncpu,host=b v=2,msg="hi there" 2\ncpu,ho\\ st=c v=3 3\ncpu,host=d v=4 4',
    # a new tag and a new field first seen on a line the exact parser reads
    'cpu,host=a v=1 1\ncpu,host=a,zone=z w="s" 2\ncpu,host=a v=3 3',
    # tag and field order decided by an exact line that comes first
    'cpu,b=1,a=2 x="1",y=2 1\ncpu,a=3 y=4,x="5" 2\ncpu,b=5 z=1 3',
    # comments, blank lines, CRLF, odd spacing, a measurement only the exact parser sees
    '# header\r\n\r\ncpu,host=a v=1 1\r\n  cpu,host=b v=2 2\ncpu,host=c  v=3 3\nmem q="x" 4\n',
    # several shapes and measurements, sparse fields
    'cpu,host=a v=1 1\nmem free=2i 1\ncpu v=3,w=4 2\ncpu,host=b,dc=x w=5 3\nmem,h=a used=1u 2',
])
def test_mixed_body_merges_fast_and_exact_lines(text):
    fast = check(text, "s")
    assert fast is not None  # merged, not declined
    assert any(m.prebuilt is not None for m in fast.measurements.values())


@pytest.mark.parametrize("text", [
    "cpu,host=a v=1 1\ncpu,host=a v=2 1",  # duplicate point: merged by the exact parser
    'cpu,host=a v=1 1\ncpu,host=a v="x" 1',  # duplicate across the two paths
    "cpu v=1i 1\ncpu v=2u 2",  # integer then unsigned: the first kind stays
    'cpu v=1 1\ncpu v="s" 2',  # a type conflict across the paths
    "cpu,v=a x=1 1\ncpu v=2 2",  # a tag that is also a field
    'cpu,v=a x=1 1\ncpu v="s" 2',
    "cpu v=0x10i 1",  # Arrow would read hexadecimal
    "cpu v=1 0x10",
    "cpu v=1 1_000",  # int() reads it; Arrow does not
    "cpu v=nan 1", "cpu v=1e400 1", "cpu v=9223372036854775808u 1",
    "cpu,time=a v=1 1", "cpu time=1 1", "cpu v=1,v=2 1", "cpu,h=a,h=b v=1 1",
])
def test_doubtful_bodies_decline_to_the_exact_parser(text):
    assert check(text, "s") is None


@pytest.mark.parametrize("text", [
    "", "\n", " ", "#", "a", "a b", "a b c d", "=", ",", " =", "m v=1", "m v=1\n",
    "\n\nm v=1", "m,a=1 v=1 5\n#x\n\n", "m v", "m =1", "m v=1 ", "m v=1,", "m, v=1",
    "m,=a v=1", "a=b v=1", "m v=1=2", "m v=1 2 3", "m\tv=1", "\r", "\r\n", "m v=1\r\r\n",
    "m v=1\rx", "é v=1", "m v=٣", "m v=1 ٣", "m v=1 1\n m v=2 2",
])
def test_small_and_odd_bodies(text):
    check(text, "s")


def test_timestamps_out_of_range_for_the_precision():
    for precision in ("us", "ms", "s", "h"):
        limit = (2**63 - 1) // PRECISIONS[precision]
        check(f"m v=1 {limit}\nm v=2 {-limit}", precision)
        check(f"m v=1 {limit + 1}", precision)
        check(f"m v=1 {-limit - 2}", precision)


def test_keys_near_the_end_of_the_body_are_compared_exactly():
    # the last lines' keys sit within 8 bytes of the end, where word reads would overrun
    for tail in ("a=1", "ab=1", "abcdefghij=1", "abcdefghik=1"):
        check("m abcdefghij=1 1\nm abcdefghij=2 2\nm " + tail)


def test_large_shapes_and_many_series():
    rows = [f"m,host=h{i} " + ",".join(f"f{j}={i * j}" for j in range(30)) + f" {i}"
            for i in range(2000)]
    fast = check("\n".join(rows))
    assert fast is not None and fast.tables()["m"].num_rows == 2000
    assert fast.tables()["m"].column("f29").type == pa.float64()


def test_one_measurement_and_key_layout_is_read_column_by_column(monkeypatch):
    """What collectors send (one measurement, the same tag and field keys on every line) is
    built column by column (_uniform); anything else goes the general way, with the same
    result as the exact parser either way."""
    results = []
    original = lp._Body._uniform

    def spy(self, *args):
        results.append(original(self, *args))
        return results[-1]

    monkeypatch.setattr(lp._Body, "_uniform", spy)
    hosts = "\n".join(f"cpu,host=h{i % 300},dc=d{i % 7} u={i}.25,n={i}i,ok=f {i // 300}"
                      for i in range(1200))
    assert check(hosts) is not None and results[-1] is not None
    assert results[-1].tables()["cpu"].column("host").to_pylist()[:2] == ["h0", "h1"]
    assert check("cpu v=1 1\ncpu v=2 2", "s") is not None and results[-1] is not None  # no tags
    for text in ["cpu,host=a v=1 1\nmem,host=a v=1 1",  # two measurements
                 "cpu,host=a v=1 1\ncpu,dc=a v=1 1",  # other tag keys
                 "cpu,host=a,dc=b v=1 1\ncpu,dc=b,host=a v=1 2",  # tag keys in another order
                 "cpu,host=a v=1 1\ncpu,host=b w=1 1"]:  # other field keys
        results.clear()
        assert check(text, "s") is not None and results and results[-1] is None
    for text in ["cpu,host=a v=1 1\ncpu,host=a v=2 1",  # a duplicate point
                 "cpu,host=a host=1 1\ncpu,host=b host=2 2",  # a tag that is also a field
                 "cpu,time=a v=1 1\ncpu,time=b v=2 2"]:
        assert check(text, "s") is None  # declined: the exact parser merges or reports


def test_separator_matrices_in_the_reused_buffer_and_beyond_it(monkeypatch):
    """A uniform body's separators are read from a per-thread buffer reused body after body,
    and from a copy of their own past its size: bodies of other sizes and shapes in turn all
    parse as the exact parser reads them."""
    monkeypatch.setattr(lp, "_SCRATCH_ITEMS", 2000)
    def body(lines, fields):
        return "\n".join(f"cpu,host=h{i % 5} " + ",".join(f"f{j}={i + j}" for j in range(fields))
                         + f" {i}" for i in range(lines))
    for lines, fields in [(300, 4), (20, 2), (300, 4), (40, 6), (5, 1), (500, 3)]:
        fast = check(body(lines, fields), "s")  # (check compares with the exact parser)
        assert fast is not None and fast.measurements["cpu"].prebuilt is not None
        assert fast.tables()["cpu"].num_rows == lines
