"""InfluxDB line protocol: text in, one Arrow table per measurement out. Pure: no I/O.

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

Measurement names, tag keys and values, and field keys escape `,`, ` ` and `=` with a
backslash; string field values are double-quoted and escape `"` and `\\`. Field values are
floats (`1`, `1.5`, `-3e4`), integers (`1i`), unsigned integers (`1u`), booleans (`t`, `T`,
`true`, `True`, `TRUE`, and the same for false) or strings. The timestamp is an integer in the
request's precision (`ns` default, `us`, `ms`, `s`, and v1's `m` and `h`); a line without one
takes the time the batch arrived. Lines starting with `#` and blank lines are skipped.

Tables have a `time` column (timestamp[us, UTC]: nanoseconds are truncated to microseconds,
Iceberg's resolution), one string column per tag and one column per field: float64, int64
(integers and unsigned integers up to 2^63-1), bool or string. Points with the same
measurement, tag set and timestamp are one point: later fields overwrite earlier ones, as in
InfluxDB. Any bad line fails the whole batch with a `LineProtocolError` naming the line.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from omnilake import errors as E

TIME = "time"
PRECISIONS = {"ns": 1, "n": 1, "us": 1_000, "u": 1_000, "µ": 1_000, "ms": 1_000_000,
              "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
V2_PRECISIONS = ("ns", "us", "ms", "s")
KINDS = {"float": pa.float64(), "integer": pa.int64(), "unsigned": pa.int64(),
         "boolean": pa.bool_(), "string": pa.string()}
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}
_INT64_MAX = 2**63 - 1
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


class LineProtocolError(E.DataError):
    """A bad line; `line` is its 1-based number in the request body."""

    sqlstate = "22P02"

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class Measurement:
    """One measurement's points while parsing, then its Arrow table."""

    name: str
    points: dict = field(default_factory=dict)  # (tags tuple, ns) -> fields dict
    kinds: dict[str, str] = field(default_factory=dict)  # field -> kind
    first_line: dict[str, int] = field(default_factory=dict)  # field or tag -> first line
    tag_keys: dict[str, None] = field(default_factory=dict)
    prebuilt: pa.Table | None = None  # made by the columnar fast path

    def table(self) -> pa.Table:
        if self.prebuilt is not None:
            return self.prebuilt
        keys = list(self.points)
        columns = {TIME: pa.array([k[1] for k in keys], pa.timestamp("us", "UTC"))}
        for tag in self.tag_keys:
            columns[tag] = pa.array([dict(k[0]).get(tag) for k in keys], pa.string())
        values = list(self.points.values())
        for name, kind in self.kinds.items():
            columns[name] = pa.array([v.get(name) for v in values], KINDS[kind])
        return pa.table(columns)


@dataclass
class Batch:
    measurements: dict[str, Measurement]
    lines: int  # lines holding a point

    def tables(self) -> dict[str, pa.Table]:
        return {name: m.table() for name, m in self.measurements.items()}


def parse(text: str | bytes, precision: str = "ns", now_ns: int | None = None) -> Batch:
    """Parse a whole request body; raises LineProtocolError for the first bad line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[:exc.start].count(b"\n") + 1
            raise LineProtocolError(line, "invalid UTF-8") from None
    if precision not in PRECISIONS:
        raise E.InvalidParameterValue(f"invalid precision {precision!r}",
                                      hint="one of ns, us, ms, s (and m, h for /write)")
    scale = PRECISIONS[precision]
    now_ns = time.time_ns() if now_ns is None else now_ns
    default_ts = now_ns - now_ns % scale  # the arrival time, in the request's precision
    if "\\" not in text and '"' not in text:
        fast = _parse_columnar(text, scale, default_ts)
        if fast is not None:
            return fast
    return _parse_lines(text, scale, default_ts)


def _parse_lines(text: str, scale: int, default_ts: int) -> Batch:
    """Line by line; exact error messages. Used whenever the columnar path declines."""
    measurements: dict[str, Measurement] = {}
    count = 0
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip(" \t\r")
        if not line or line[0] == "#":
            continue
        try:
            if "\\" in line or '"' in line:
                name, tags, fields, stamp = _parse_escaped(line)
            else:
                name, tags, fields, stamp = _parse_plain(line)
            ts = default_ts if stamp is None else _timestamp(stamp, scale)
        except _Bad as exc:
            raise LineProtocolError(number, str(exc)) from None
        m = measurements.get(name)
        if m is None:
            m = measurements[name] = Measurement(name)
        _add(m, number, tags, fields, ts)
        count += 1
    return Batch(measurements, count)


class _Bad(Exception):
    pass


def _add(m: Measurement, number: int, tags: list[tuple[str, str]], fields: list, ts: int) -> None:
    tag_names = set()
    for key, _ in tags:
        if key in tag_names:
            raise LineProtocolError(number, f'tag "{key}" appears twice')
        tag_names.add(key)
        if key not in m.tag_keys:
            if key in m.kinds:
                raise LineProtocolError(number, f'"{key}" is a field of "{m.name}" and cannot '
                                                "also be a tag")
            m.tag_keys[key] = None
            m.first_line.setdefault(key, number)
    values = {}
    for key, kind, value in fields:
        if key in tag_names or key in m.tag_keys:
            raise LineProtocolError(number, f'"{key}" is a tag of "{m.name}" and cannot also be '
                                            "a field")
        known = m.kinds.get(key)
        if known is None:
            m.kinds[key] = kind
            m.first_line[key] = number
        elif known != kind:
            if {known, kind} == {"integer", "unsigned"}:
                pass  # both stored as BIGINT
            else:
                raise LineProtocolError(number, f'field type conflict: "{key}" is {kind} here but '
                                                f"{known} on line {m.first_line[key]}")
        values[key] = value
    key = (tuple(sorted(tags)), ts // 1000)  # stored in microseconds: points that equal there
    existing = m.points.get(key)
    if existing is None:
        m.points[key] = values
    else:
        existing.update(values)  # a duplicate point: later fields win


def _timestamp(text: str, scale: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _Bad(f"invalid timestamp {text!r}") from None
    ns = value * scale
    if not -(2**63) <= ns <= _INT64_MAX:
        raise _Bad(f"timestamp {text} is out of range")
    return ns


def _check_name(name: str, what: str) -> None:
    if not name:
        raise _Bad(f"missing {what}")
    if name == TIME and what != "measurement":
        raise _Bad(f'a {what} cannot be named "time"')


def _parse_plain(line: str):
    """A line without escapes or quotes: str.split does the work."""
    parts = line.split(" ")
    if len(parts) == 2:
        head, body, stamp = parts[0], parts[1], None
    elif len(parts) == 3:
        head, body, stamp = parts
    else:
        parts = [p for p in parts if p]
        if len(parts) not in (2, 3):
            raise _Bad("expected: measurement[,tags] fields [timestamp]" if len(parts) < 2
                       else "unexpected text after the timestamp")
        head, body, stamp = parts[0], parts[1], parts[2] if len(parts) == 3 else None
    pieces = head.split(",")
    name = pieces[0]
    _check_name(name, "measurement")
    tags = []
    for piece in pieces[1:]:
        key, eq, value = piece.partition("=")
        if not eq or "=" in value:
            raise _Bad(f"invalid tag {piece!r}")
        _check_name(key, "tag key")
        if not value:
            raise _Bad(f'tag "{key}" has no value')
        tags.append((key, value))
    fields = []
    for piece in body.split(","):
        key, eq, value = piece.partition("=")
        if not eq:
            raise _Bad(f"invalid field {piece!r}")
        _check_name(key, "field key")
        fields.append((key, *_field_value(value, key)))
    return name, tags, fields, stamp


def _field_value(text: str, key: str):
    if not text:
        raise _Bad(f'field "{key}" has no value')
    last = text[-1]
    if last == "i" or last == "u":
        body = text[:-1]
        if not body or not (body.isdigit() or (body[0] == "-" and body[1:].isdigit() and last == "i")):
            raise _Bad(f'invalid {"integer" if last == "i" else "unsigned"} value {text!r} for '
                       f'field "{key}"')
        value = int(body)
        if value > _INT64_MAX or value < -(2**63):
            raise _Bad(f'value {text} of field "{key}" is out of range for a 64-bit integer')
        return ("integer" if last == "i" else "unsigned"), value
    if text in _TRUE:
        return "boolean", True
    if text in _FALSE:
        return "boolean", False
    if text[0] == '"':
        raise _Bad(f'unterminated string for field "{key}"')
    if not _FLOAT.match(text):
        raise _Bad(f'invalid value {text!r} for field "{key}"')
    value = float(text)
    if not math.isfinite(value):
        raise _Bad(f'value {text} of field "{key}" is out of range for a float')
    return "float", value


def _parse_escaped(line: str):
    """The general case: a character scanner for escapes and quoted strings."""
    n = len(line)
    i = 0

    def read_until(stops: str, what: str) -> tuple[str, str | None]:
        nonlocal i
        out = []
        while i < n:
            c = line[i]
            if c == "\\" and i + 1 < n and line[i + 1] in ",= \\\"":
                out.append(line[i + 1])
                i += 2
                continue
            if c in stops:
                return "".join(out), c
            out.append(c)
            i += 1
        return "".join(out), None

    name, stop = read_until(", ", "measurement")
    _check_name(name, "measurement")
    tags = []
    while stop == ",":
        i += 1
        key, stop = read_until("=, ", "tag key")
        if stop != "=":
            raise _Bad(f"invalid tag {key!r}")
        _check_name(key, "tag key")
        i += 1
        value, stop = read_until(", =", "tag value")
        if stop == "=":
            raise _Bad(f'invalid tag value for "{key}"')
        if not value:
            raise _Bad(f'tag "{key}" has no value')
        tags.append((key, value))
    if stop != " ":
        raise _Bad("expected: measurement[,tags] fields [timestamp]")
    while i < n and line[i] == " ":
        i += 1
    fields = []
    while True:
        key, stop = read_until("=, ", "field key")
        if stop != "=":
            raise _Bad(f"invalid field {key!r}" if key else "missing fields")
        _check_name(key, "field key")
        i += 1
        if i < n and line[i] == '"':
            i += 1
            out = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    i += 1
                out.append(line[i])
                i += 1
            if i >= n:
                raise _Bad(f'unterminated string for field "{key}"')
            i += 1
            fields.append((key, "string", "".join(out)))
            stop = line[i] if i < n else None
        else:
            start = i
            while i < n and line[i] not in ", ":
                i += 1
            stop = line[i] if i < n else None
            fields.append((key, *_field_value(line[start:i], key)))
        if stop == ",":
            i += 1
            continue
        break
    stamp = None
    if stop == " ":
        rest = line[i:].strip(" ")
        if rest:
            if " " in rest:
                raise _Bad("unexpected text after the timestamp")
            stamp = rest
    elif stop is not None:
        raise _Bad(f"unexpected {stop!r} after the fields")
    return name, tags, fields, stamp


# -- the columnar fast path ----------------------------------------------------------------
class _Decline(Exception):
    """The fast path cannot vouch for this body; the line-by-line parser decides."""


def _parse_columnar(text: str, scale: int, default_ts: int) -> Batch | None:
    """Bodies without escapes or quotes, parsed a series shape at a time: lines with the same
    measurement, tags and field keys are grouped, their values converted by Arrow casts.
    Returns None on anything unusual (a bad value, mixed kinds, duplicate points), and the
    line-by-line parser then produces the result or the exact error."""
    try:
        return _columnar(text, scale, default_ts)
    except (_Decline, _Bad, LineProtocolError, pa.ArrowInvalid, pa.ArrowTypeError,
            pa.ArrowNotImplementedError, ValueError, IndexError):
        return None


def _columnar(text: str, scale: int, default_ts: int) -> Batch:
    """Tokenised by Arrow kernels over all lines at once: split into head, fields and time
    by a regular expression, heads (measurement + tags) parsed once per distinct head, field
    values cast per column."""
    import pyarrow.compute as pc
    raw = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n")).cast(
        pa.string())
    if any(c in text for c in "\r\t") or "  " in text or "\n " in text or " \n" in text:
        raw = pc.utf8_trim(raw, " \t\r")
    keep = pc.and_(pc.greater(pc.utf8_length(raw), 0),
                   pc.invert(pc.starts_with(raw, "#")))
    numbers = pc.filter(pa.array(np.arange(1, len(raw) + 1, dtype=np.int64)), keep)
    lines = pc.filter(raw, keep)
    count = len(lines)
    if count == 0:
        return Batch({}, 0)
    parts = pc.split_pattern(lines, " ")
    widths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    if widths.min() < 2 or widths.max() > 3 or widths.min() != widths.max():
        raise _Decline  # odd spacing, or only some lines with a timestamp
    head, body = pc.list_element(parts, 0), pc.list_element(parts, 1)
    stamp = pc.list_element(parts, 2) if widths[0] == 3 else None
    # every field is key=value: as many "=" as fields, so one split gives key, value, key, ...
    if not pc.all(pc.equal(pc.count_substring(body, "="),
                           pc.add(pc.count_substring(body, ","), 1))).as_py():
        raise _Decline
    tokens = pc.split_pattern(pc.replace_substring(body, "=", ","), ",")
    offsets = tokens.offsets.to_numpy(zero_copy_only=False) // 2  # of the fields, per line
    flat = pc.list_flatten(tokens)
    field_keys = flat.take(pa.array(np.arange(0, len(flat), 2)))
    values = flat.take(pa.array(np.arange(1, len(flat), 2)))
    if not pc.all(pc.greater(pc.utf8_length(field_keys), 0)).as_py():
        raise _Decline  # an empty field key
    keysig = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                                     field_keys), ",")
    # heads: parsed once each
    head_codes = head.dictionary_encode()
    distinct = head_codes.dictionary.to_pylist()
    parsed = [_head(h) for h in distinct]
    head_index = head_codes.indices
    names = pa.array([p[0] for p in parsed], pa.string())
    row_names = names.take(head_index)
    groups = pc.binary_join_element_wise(row_names, keysig, "\x00").dictionary_encode()
    group_index = groups.indices.to_numpy(zero_copy_only=False)
    line_numbers = numbers.to_numpy(zero_copy_only=False)
    head_rows = head_index.to_numpy(zero_copy_only=False)
    _, first_rows = np.unique(head_rows, return_index=True)  # rows are in line order
    head_first = line_numbers[first_rows]
    by_measurement: dict[str, Measurement] = {}
    selections: dict[str, list] = {}
    for code, key in enumerate(groups.dictionary.to_pylist()):
        name, sig = key.split("\x00", 1)
        keys = sig.split(",")
        if len(set(keys)) != len(keys) or TIME in keys:
            raise _Decline
        rows = np.flatnonzero(group_index == code)
        m = by_measurement.get(name)
        if m is None:
            m = by_measurement[name] = Measurement(name)
        first = int(line_numbers[rows[0]])
        for key in keys:
            if key not in m.kinds:
                m.kinds[key] = ""
                m.first_line[key] = first
        selections.setdefault(name, []).append((rows, keys))
    for h, (name, tags) in enumerate(parsed):
        m = by_measurement[name]
        for key, _ in tags:
            if key in m.kinds:
                raise _Decline
            if key not in m.tag_keys or head_first[h] < m.first_line[key]:
                m.tag_keys.setdefault(key, None)
                m.first_line[key] = int(head_first[h])
    for name, m in by_measurement.items():
        m.tag_keys = dict.fromkeys(sorted(m.tag_keys, key=lambda k: m.first_line[k]))
        chosen = np.concatenate([rows for rows, _ in selections[name]])
        taken = pa.array(chosen)
        columns = {TIME: _stamps(None if stamp is None else stamp.take(taken), len(chosen),
                                 scale, default_ts, pc)}
        heads_here = head_index.take(taken)
        for key in m.tag_keys:
            per_head = pa.array([dict(tags).get(key) for _, tags in parsed], pa.string())
            columns[key] = per_head.take(heads_here)
        field_parts: dict[str, list] = {k: [] for k in m.kinds}
        for rows, keys in selections[name]:
            starts = offsets[rows]
            for j, key in enumerate(keys):
                field_parts[key].append(values.take(pa.array(starts + j)))
            for key in m.kinds:
                if key not in keys:
                    field_parts[key].append(pa.nulls(len(rows), pa.string()))
        for key, chunks in field_parts.items():
            m.kinds[key], columns[key] = _column(pa.concat_arrays(chunks), pc)
        table = pa.table(columns)
        if table.group_by([TIME, *m.tag_keys], use_threads=False).aggregate([]).num_rows \
                != table.num_rows:
            raise _Decline  # duplicate points: merged line by line
        m.prebuilt = table
    return Batch(by_measurement, count)


def _stamps(stamp: pa.Array | None, n: int, scale: int, default_ts: int, pc) -> pa.Array:
    if stamp is None:
        ns = np.full(n, default_ts, dtype=np.int64)
    else:
        ns = pc.multiply_checked(stamp.cast(pa.int64()), scale).to_numpy(zero_copy_only=False)
    return pa.array(np.floor_divide(ns, 1000), pa.int64()).cast(pa.timestamp("us", "UTC"))


def _head(head: str) -> tuple[str, tuple]:
    pieces = head.split(",")
    name = pieces[0]
    if not name:
        raise _Decline
    tags = []
    for piece in pieces[1:]:
        key, eq, value = piece.partition("=")
        if not eq or not key or not value or "=" in value or key == TIME:
            raise _Decline
        tags.append((key, value))
    if len({k for k, _ in tags}) != len(tags):
        raise _Decline
    return name, tuple(tags)


def _column(array: pa.Array, pc) -> tuple[str, pa.Array]:
    sample = pc.drop_null(array)[0].as_py()
    if not sample:
        raise _Decline
    last = sample[-1:]
    if last in ("i", "u"):
        if not pc.all(pc.ends_with(array, last)).as_py():
            raise _Decline
        digits = pc.utf8_slice_codeunits(array, 0, -1)
        if last == "i":
            return "integer", digits.cast(pa.int64())
        values = digits.cast(pa.uint64())
        if pc.max(values).as_py() > _INT64_MAX:
            raise _Decline
        return "unsigned", values.cast(pa.int64())
    if sample in _TRUE or sample in _FALSE:
        truth = pc.is_in(array, value_set=pa.array(sorted(_TRUE)))
        falsity = pc.is_in(array, value_set=pa.array(sorted(_FALSE)))
        if not pc.all(pc.or_(pc.or_(truth, falsity), pc.is_null(array))).as_py():
            raise _Decline
        return "boolean", pc.if_else(pc.is_valid(array), truth, None)
    values = array.cast(pa.float64())
    if not pc.all(pc.is_finite(values)).as_py():
        raise _Decline
    return "float", values
