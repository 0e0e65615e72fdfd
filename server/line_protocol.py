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
import threading
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
    lines: list[int] = field(default_factory=list)  # each point's line (exact parser's points)
    prebuilt: pa.Table | None = None  # made by the fast path

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
    body: bytes | None
    if isinstance(text, str):
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: only the exact parser takes them
            body = None
    else:
        body, text = bytes(text), None
        if not body.isascii():
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = body[:exc.start].count(b"\n") + 1
                raise LineProtocolError(line, "invalid UTF-8") from None
    if precision not in PRECISIONS:
        raise E.InvalidParameterValue(f"invalid precision {precision!r}",
                                      hint="one of ns, us, ms, s (and m, h for /write)")
    scale = PRECISIONS[precision]
    now_ns = time.time_ns() if now_ns is None else now_ns
    default_ts = now_ns - now_ns % scale  # the arrival time, in the request's precision
    if body is not None:
        fast = _parse_fast(body, scale, default_ts)
        if fast is not None:
            return fast
    if text is None:
        text = body.decode("ascii")
    return _parse_lines(text, scale, default_ts)


def _parse_lines(text: str, scale: int, default_ts: int) -> Batch:
    """Line by line; exact error messages. Used whenever the fast path declines."""
    return _parse_numbered(enumerate(text.split("\n"), start=1), scale, default_ts)


def _parse_numbered(lines, scale: int, default_ts: int) -> Batch:
    """(line number, text) pairs, parsed one by one."""
    measurements: dict[str, Measurement] = {}
    count = 0
    for number, line in lines:
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
        m.lines.append(number)
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


# -- the fast path -------------------------------------------------------------------------
# Whole-body NumPy/Arrow work instead of Python per line: find every separator (newline,
# space, comma, equals sign) at once, group lines by their sequence of separators (their
# shape), and read each token column straight out of the body: Arrow string arrays whose
# offsets point into it (no copy), cast per column. Heads (measurement + tags) are parsed in
# Python once per distinct head. Lines it does not read (escapes, quotes, tabs, comments,
# blank lines, odd spacing, empty tokens) go to the exact parser with their line numbers and
# the results are merged. Anything doubtful (a value that does not cast, a type conflict,
# duplicate points, a tag that is also a field) declines the whole body, and the exact parser
# then gives the result or the exact error.

class _Decline(Exception):
    """The fast path cannot vouch for this body; the exact parser decides."""


# The separators of a well-formed plain line: `,k=v` per tag, a space, `k=v` fields joined
# by commas, then an optional space before the timestamp, then the newline.
_SHAPE = re.compile(rb"((?:,=)*) (=(?:,=)*)( ?)\n\Z")
_TRUE_SET = pa.array(sorted(_TRUE))
_FALSE_SET = pa.array(sorted(_FALSE))


def _parse_fast(body: bytes, scale: int, default_ts: int) -> Batch | None:
    if not body:
        return None
    try:
        return _Body(body, scale, default_ts).parse()
    except (_Decline, LineProtocolError, pa.ArrowInvalid, pa.ArrowTypeError,
            pa.ArrowNotImplementedError):
        return None


@dataclass(slots=True)
class _Head:
    """A distinct head text: its measurement and tags, the series it names, its first line."""

    name: str
    tags: tuple
    series: int
    first: int
    keys: tuple  # the tag keys, in the head's order


@dataclass
class _Part:
    """Rows of one measurement whose lines have the same shape and field keys."""

    first: int  # line number of its first row
    lines: np.ndarray  # line number of each row
    heads: np.ndarray  # head id of each row
    micros: np.ndarray  # time of each row
    fields: dict  # key -> (kind, Arrow array)


class _Body:
    """One request body on the fast path: parse() gives its Batch (None when every line is
    left to the exact parser), or raises _Decline."""

    def __init__(self, body: bytes, scale: int, default_ts: int):
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n")  # the exact parser strips a trailing \r too
        self.body, self.size = body, len(body)
        self.buf = np.frombuffer(body, np.uint8)
        self.data = pa.py_buffer(body)
        self.scale, self.default_ts = scale, default_ts
        self.heads: list[_Head] = []
        self.head_ids: dict[str, int] = {}
        self.series: dict[tuple, int] = {}
        self.parts: dict[str, list[_Part]] = {}

    def parse(self) -> Batch | None:
        buf = self.buf
        virtual = not self.body.endswith(b"\n")  # the end of the body ends the last line
        pos, adjacent = _separators(buf, virtual)
        if virtual:
            sep = np.empty(len(pos), np.uint8)
            np.take(buf, pos[:-1], out=sep[:-1])
            sep[-1] = 10
        else:
            sep = buf[pos]
        self.pos = pos
        ends = np.flatnonzero(sep == 10)  # each line's newline, as an index into pos
        n = len(ends)
        firsts = np.zeros(n, np.int64)  # each line's first separator, as an index into pos
        firsts[1:] = ends[:-1] + 1
        starts = np.zeros(n, np.int64)  # each line's first byte
        starts[1:] = pos[ends[:-1]] + 1
        self.starts = starts
        exact = self._exact_lines(ends, starts, adjacent)
        plain = np.flatnonzero(~exact)
        counts = (ends - firsts + 1)[plain]
        distinct = np.unique(counts)
        for count in distinct.tolist():
            if len(plain) == n and len(distinct) == 1:
                rows, matrix = plain, sep.reshape(n, count)
            else:
                rows = plain[counts == count]
                matrix = sep[firsts[rows][:, None] + np.arange(count)]
            if (matrix == matrix[0]).all():
                shapes = [(matrix[0], rows)]
            else:
                unique, inverse = np.unique(matrix, axis=0, return_inverse=True)
                inverse = inverse.ravel()
                shapes = [(unique[k], rows[inverse == k]) for k in range(len(unique))]
            for shape, lines in shapes:
                match = _SHAPE.match(shape.tobytes())
                if match is None:
                    exact[lines] = True  # not a well-formed plain line: the exact parser says why
                elif len(lines) == n:  # all lines: their separators are a view
                    uniform = self._uniform(pos.reshape(n, count), match)
                    if uniform is not None:
                        return uniform
                    self._read_shape(lines, pos.reshape(n, count), match)
                else:
                    self._read_shape(lines, pos[firsts[lines][:, None] + np.arange(count)], match)
        others = np.flatnonzero(exact)
        if len(others) == n:
            return None
        merged = None
        if len(others):
            texts = (self.body[starts[i]:pos[ends[i]]].decode("utf-8") for i in others.tolist())
            merged = _parse_numbered(zip((others + 1).tolist(), texts), self.scale,
                                     self.default_ts)
        return self._assemble(merged)

    def _exact_lines(self, ends: np.ndarray, starts: np.ndarray, adjacent: bool) -> np.ndarray:
        """Lines left to the exact parser (a boolean per line)."""
        buf, pos = self.buf, self.pos
        exact = np.zeros(len(ends), bool)
        newlines = pos[ends]
        for byte in b'\\"\t\r':
            if bytes([byte]) in self.body:  # memchr: almost always absent
                exact[np.searchsorted(newlines, np.flatnonzero(buf == byte))] = True
        exact |= buf[starts] == ord("#")  # comments
        # an empty token (two separators in a row, or one first): blank lines, doubled or
        # leading spaces, missing keys or values
        if adjacent:
            empty = np.flatnonzero(np.diff(pos) == 1) + 1
            exact[np.searchsorted(ends, empty)] = True
            exact[0] |= pos[0] == 0
        return exact

    def _read_shape(self, lines: np.ndarray, seps: np.ndarray, match) -> None:
        """Lines of one shape: heads parsed once each, then one part per measurement and
        field keys. seps[i, t] is where separator t of line i is; token t (t >= 1) begins
        after separator t - 1 and ends at separator t. Field k's key is token h + 1 + 2k and
        its value token h + 2 + 2k; the timestamp, if any, is the last token."""
        h = len(match.group(1))  # the separator ending the head (measurement and tags)
        fields = (len(match.group(2)) + 1) // 2
        key_begin = seps[:, h:h + 2 * fields:2] + 1
        key_end = seps[:, h + 1:h + 2 * fields + 1:2]
        value_end = seps[:, h + 2:h + 2 * fields + 2:2]
        row_heads = self._heads(lines, seps[:, h])
        names: dict[str, int] = {}
        measurements = _measurement_codes(self.heads, row_heads, names)
        if len(names) == 1 and self._same_keys(key_begin, key_end):
            keys = [self.body[b:e].decode("utf-8")
                    for b, e in zip(key_begin[0].tolist(), key_end[0].tolist())]
            groups = [(next(iter(names)), keys, slice(None))]
        else:
            groups = self._key_groups(names, measurements, key_begin, key_end)
        for name, keys, rows in groups:
            if len(set(keys)) != fields or TIME in keys:
                raise _Decline  # a repeated field or one named "time"
            numbers = lines[rows] + 1
            if match.group(3):
                micros = self._micros(seps[rows, -2] + 1, seps[rows, -1])
            else:
                micros = np.full(len(numbers), self.default_ts // 1000, np.int64)
            values = self._fields(keys, key_end[rows] + 1, value_end[rows])
            self.parts.setdefault(name, []).append(
                _Part(int(numbers[0]), numbers, row_heads[rows], micros, values))

    def _uniform(self, seps: np.ndarray, match) -> Batch | None:
        """Every line plain, of one shape, one measurement and the same tag and field keys
        (what collectors send): the table column by column, with no Python per series (a
        thousand hosts cost the per-head path a third of the parse). None when names or
        keys differ: the general path sorts those out. seps as in _read_shape."""
        h = len(match.group(1))  # the head: measurement, then ",key=value" per tag
        fields = (len(match.group(2)) + 1) // 2
        starts, n = self.starts, len(seps)
        # Read column by column below: a copy in column order makes each column contiguous
        # (a column of the row-major matrix costs a cache line per value): parser 1.08-1.15x.
        seps = _column_major(seps)
        # Each distinct head text is checked once, on its first line: same measurement and
        # tag keys (in the same order) everywhere means the same head text is the same series,
        # and only the same.
        heads = _evens(_tokens(self.data, starts, seps[:, h]).dictionary_encode().indices,
                       np.int32)
        first = np.flatnonzero(np.diff(np.maximum.accumulate(heads), prepend=-1))
        head_seps = seps[first]
        tag_begin, tag_end = seps[:, 0:h:2] + 1, seps[:, 1:h:2]
        key_begin, key_end = seps[:, h:h + 2 * fields:2] + 1, seps[:, h + 1:h + 2 * fields + 1:2]
        if not (self._same_keys(starts[first, None], head_seps[:, :1])  # measurement
                and self._same_keys(tag_begin[first], tag_end[first])
                and self._same_keys(key_begin, key_end)):
            return None
        text = self.body
        name = text[starts[0]:seps[0, 0]].decode("utf-8")
        tags = [text[b:e].decode("utf-8") for b, e in zip(tag_begin[0].tolist(), tag_end[0].tolist())]
        keys = [text[b:e].decode("utf-8") for b, e in zip(key_begin[0].tolist(), key_end[0].tolist())]
        if len(set(tags + keys)) != len(tags) + len(keys) or TIME in tags or TIME in keys:
            raise _Decline  # a repeated key, a tag that is also a field, or one named "time"
        if match.group(3):
            micros = self._micros(seps[:, -2] + 1, seps[:, -1])
        else:
            micros = np.full(n, self.default_ts // 1000, np.int64)
        if _has_duplicates(heads.astype(np.int64), micros):
            raise _Decline  # duplicate points: the exact parser merges them
        columns = {TIME: pa.array(micros, pa.timestamp("us", "UTC"))}
        evens = pa.array(np.arange(0, 2 * n, 2))
        for k, tag in enumerate(tags):
            values = _tokens(self.data, tag_end[:, k] + 1, seps[:, 2 * k + 2]).take(evens)
            columns[tag] = values.cast(pa.string())
        values = self._fields(keys, key_end + 1, seps[:, h + 2:h + 2 * fields + 2:2])
        columns.update((key, array) for key, (_, array) in values.items())
        measurement = Measurement(name, kinds={key: kind for key, (kind, _) in values.items()},
                                  first_line=dict.fromkeys(tags + keys, 1),
                                  tag_keys=dict.fromkeys(tags), prebuilt=pa.table(columns))
        return Batch({name: measurement}, n)

    def _key_groups(self, names: dict[str, int], measurements: np.ndarray,
                    begin: np.ndarray, end: np.ndarray) -> list:
        """(measurement, field keys, rows) for lines of one shape whose measurements or
        field keys differ."""
        codes, dictionaries = [measurements], []
        for k in range(begin.shape[1]):
            encoded = _tokens(self.data, begin[:, k], end[:, k]).dictionary_encode()
            codes.append(_evens(encoded.indices, np.int32))
            dictionaries.append(encoded.dictionary.to_pylist())
        unique, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        name_of = {code: name for name, code in names.items()}
        return [(name_of[int(u[0])], [dictionaries[k][c] for k, c in enumerate(u[1:].tolist())],
                 np.flatnonzero(inverse == g)) for g, u in enumerate(unique)]

    def _heads(self, lines: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The head id of each line; each distinct head text parsed once."""
        encoded = _tokens(self.data, self.starts[lines], ends).dictionary_encode()
        codes = _evens(encoded.indices, np.int32)
        # codes are numbered in order of first appearance: a code first appears where the
        # running maximum grows
        grows = np.diff(np.maximum.accumulate(codes), prepend=-1)
        first_lines = (lines[np.flatnonzero(grows)] + 1).tolist()
        # One pass per distinct head (a thousand hosts: a thousand), so kept lean.
        heads, head_ids, series, known = self.heads, self.head_ids, self.series, _HEADS
        ids = []
        for text, first in zip(encoded.dictionary.to_pylist(), first_lines):
            i = head_ids.get(text)
            if i is None:
                name, tags, canonical, keys = known.get(text) or _head(text)
                i = head_ids[text] = len(heads)
                heads.append(_Head(name, tags, series.setdefault(canonical, len(series)), first,
                                   keys))
            elif first < heads[i].first:
                heads[i].first = first
            ids.append(i)
        return np.array(ids, np.int64)[codes]

    def _same_keys(self, begin: np.ndarray, end: np.ndarray) -> bool:
        """Whether every line has the first line's field keys (begin/end: line x field).
        Column by column: small temporaries (big ones cost page faults)."""
        import pyarrow.compute as pc
        for k in range(begin.shape[1]):
            first = self.body[begin[0, k]:end[0, k]].decode("utf-8")
            keys = _tokens(self.data, begin[:, k], end[:, k])
            if not pc.all(pc.equal(keys, first)).as_py():
                return False
        return True

    def _micros(self, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Timestamps in the request's precision -> microseconds, floored as the exact parser
        does; out of range declines."""
        self._refuse_hex(begin)
        values = _evens(_tokens(self.data, begin, end).cast(pa.int64()), np.int64)
        if self.scale != 1:
            if values.min() < -(2**63 // self.scale) or values.max() > _INT64_MAX // self.scale:
                raise _Decline
            values = values * self.scale
        return np.floor_divide(values, 1000)

    def _refuse_hex(self, begin: np.ndarray) -> None:
        """Arrow reads 0x.. as a hexadecimal integer, int() does not."""
        second = self.buf[np.minimum(begin + 1, self.size - 1)]  # a token may end the body
        if ((self.buf[begin] == ord("0")) & (second | 0x20 == ord("x"))).any():
            raise _Decline

    def _fields(self, keys: list[str], begin: np.ndarray, end: np.ndarray) -> dict:
        """key -> (kind, Arrow array) for the field values (begin/end: line x field). Each
        field's kind is its first value's, and every value is checked: a column the exact
        parser would read differently declines."""
        out = {}
        for k, key in enumerate(keys):
            kind = _kind(self.body[begin[0, k]:end[0, k]])
            out[key] = (kind, pa.array(self._cast(kind, begin[:, k], end[:, k])))
        return out

    def _cast(self, kind: str, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
        import pyarrow.compute as pc
        if kind == "float":
            # Arrow's float parsing accepts what _FLOAT accepts (and gives the same doubles),
            # plus nan and inf, which are not finite and so decline like out-of-range values.
            values = _evens(_tokens(self.data, begin, end).cast(pa.float64()), np.float64)
            if not np.isfinite(values).all():
                raise _Decline
            return values
        if kind == "boolean":
            tokens = _tokens(self.data, begin, end).take(np.arange(0, 2 * len(begin), 2))
            truth = pc.is_in(tokens, value_set=_TRUE_SET)
            if not pc.all(pc.or_(truth, pc.is_in(tokens, value_set=_FALSE_SET))).as_py():
                raise _Decline
            return truth.to_numpy(zero_copy_only=False)
        suffix = ord("i" if kind == "integer" else "u")
        if not (self.buf[end - 1] == suffix).all():
            raise _Decline
        self._refuse_hex(begin)
        digits = _tokens(self.data, begin, end - 1)  # without the suffix
        if kind == "integer":
            return _evens(digits.cast(pa.int64()), np.int64)
        values = _evens(digits.cast(pa.uint64()), np.uint64)  # refuses a sign
        if values.max() > _INT64_MAX:
            raise _Decline
        return values.astype(np.int64)

    def _assemble(self, merged: Batch | None) -> Batch:
        """One Measurement per name, in order of first appearance, with the exact parser's
        measurements merged in."""
        exact = merged.measurements if merged is not None else {}
        firsts = {name: min(p.first for p in ps) for name, ps in self.parts.items()}
        for name, m in exact.items():
            firsts[name] = min(firsts.get(name, m.lines[0]), m.lines[0])
        out = {}
        for name in sorted(firsts, key=firsts.get):
            if name not in self.parts:
                out[name] = exact[name]
            else:
                out[name] = self._measurement(name, self.parts[name], exact.get(name))
        lines = sum(len(p.lines) for ps in self.parts.values() for p in ps)
        return Batch(out, lines + (merged.lines if merged is not None else 0))

    def _measurement(self, name: str, parts: list[_Part],
                     exact: Measurement | None) -> Measurement:
        heads = self.heads
        parts.sort(key=lambda p: p.first)
        kinds: dict[str, str] = {}
        field_at: dict[str, tuple[int, int]] = {}  # key -> (first line, rank in that line)
        for p in parts:
            for key, (kind, _) in p.fields.items():
                if key not in kinds:
                    kinds[key] = kind
                    field_at[key] = (p.first, len(field_at))
                elif kinds[key] != kind:
                    raise _Decline  # the exact parser reports a conflict or keeps the first
        row_heads = np.concatenate([p.heads for p in parts])
        used = np.unique(row_heads).tolist()
        used.sort(key=lambda i: heads[i].first)
        tag_at: dict[str, tuple[int, int]] = {}
        shapes = {heads[i].keys for i in used}
        # Every head with the same tag keys (the usual case): the first head has them all.
        for i in used if len(shapes) > 1 else used[:1]:
            for key in heads[i].keys:
                if key not in tag_at:
                    tag_at[key] = (heads[i].first, len(tag_at))
        if exact is not None:
            for key, kind in exact.kinds.items():
                if kinds.setdefault(key, kind) != kind:
                    raise _Decline
            _merge_order(field_at, exact.kinds, exact.first_line)
            _merge_order(tag_at, exact.tag_keys, exact.first_line)
        if tag_at.keys() & kinds.keys():
            raise _Decline  # a tag that is also a field: the exact parser's error
        tag_keys = sorted(tag_at, key=tag_at.get)
        field_keys = sorted(field_at, key=field_at.get)

        micros = np.concatenate([p.micros for p in parts])
        lines = np.concatenate([p.lines for p in parts])
        columns = {TIME: pa.array(micros, pa.timestamp("us", "UTC"))}
        per_head = np.zeros(len(heads), np.int64)
        per_head[used] = np.arange(len(used))
        which = pa.array(per_head[row_heads])
        if len(shapes) == 1:  # a column of values per key, straight from the heads
            (keys,) = shapes
            by_key = dict(zip(keys, zip(*[[v for _, v in heads[i].tags] for i in used])))
            values = [by_key.get(key) or [None] * len(used) for key in tag_keys]
        else:
            tags = [dict(heads[i].tags) for i in used]
            values = [[t.get(key) for t in tags] for key in tag_keys]
        for key, column in zip(tag_keys, values):
            columns[key] = pa.array(column, pa.string()).take(which)
        for key in field_keys:
            chunks = [p.fields[key][1] if key in p.fields else
                      pa.nulls(len(p.lines), KINDS[kinds[key]]) for p in parts]
            columns[key] = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
        table = pa.table(columns)
        row_series = np.array([h.series for h in heads], np.int64)[row_heads]
        if exact is not None:
            table = pa.concat_tables([table, exact.table()], promote_options="default").select(
                [TIME, *tag_keys, *field_keys])
            lines = np.concatenate([lines, np.array(exact.lines, np.int64)])
            micros = np.concatenate([micros, np.array([k[1] for k in exact.points], np.int64)])
            row_series = np.concatenate([row_series, np.array(
                [self.series.setdefault((name, k[0]), len(self.series)) for k in exact.points],
                np.int64)])
        if _has_duplicates(row_series, micros):
            raise _Decline  # duplicate points: the exact parser merges them
        if (np.diff(lines) < 0).any():
            table = table.take(np.argsort(lines, kind="stable"))  # rows in line order
        first_line = {key: at[0] for key, at in tag_at.items()}
        first_line.update((key, at[0]) for key, at in field_at.items())
        return Measurement(name, kinds={k: kinds[k] for k in field_keys},
                           first_line=first_line, tag_keys=dict.fromkeys(tag_keys),
                           prebuilt=table)


_CHUNK = 1 << 20
_scratch = threading.local()
_SCRATCH_ITEMS = 1 << 22  # 32 MB of int64 per thread at most (a 10k-line body: ~2 MB)


def _separators(buf: np.ndarray, end: bool) -> tuple[np.ndarray, bool]:
    """Positions of every newline, space, comma and equals sign, then len(buf) if `end` (a
    newline after the body), and whether two are adjacent or one starts the body (an empty
    token somewhere). Done in 1 MiB pieces with two masks kept per thread: fresh
    multi-megabyte temporaries cost more in page faults than the comparisons themselves
    (measured 5.7 -> 2.0 ms for 2.5 MB)."""
    masks = getattr(_scratch, "masks", None)
    if masks is None:
        masks = _scratch.masks = (np.empty(_CHUNK, bool), np.empty(_CHUNK, bool))
    pieces, adjacent, previous = [], False, True  # as if a separator came before the body
    for lo in range(0, len(buf), _CHUNK):
        part = buf[lo:lo + _CHUNK]
        mask, other = masks[0][:len(part)], masks[1][:len(part)]
        np.equal(part, 10, out=mask)
        for byte in (32, 44, 61):
            np.equal(part, byte, out=other)
            mask |= other
        if not adjacent:
            np.logical_and(mask[1:], mask[:-1], out=other[1:])
            adjacent = bool(previous and mask[0]) or bool(other[1:].any())
            previous = bool(mask[-1])
        found = np.flatnonzero(mask)
        found += lo
        pieces.append(found)
    if end:
        adjacent |= previous  # the body ends with a separator other than a newline
        pieces.append(np.array([len(buf)]))
    return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), adjacent


def _column_major(matrix: np.ndarray) -> np.ndarray:
    """`matrix` copied into column-major order, in a buffer of the calling thread reused from
    body to body (a fresh multi-megabyte copy would cost its page faults each time): valid
    until the thread's next call, so nothing may keep it. A matrix larger than the buffer
    may grow to (_SCRATCH_ITEMS) gets a copy of its own."""
    n, m = matrix.shape
    if n * m > _SCRATCH_ITEMS:
        return np.asfortranarray(matrix)
    space = getattr(_scratch, "columns", None)
    if space is None or len(space) < n * m or space.dtype != matrix.dtype:
        space = _scratch.columns = np.empty(n * m, matrix.dtype)
    out = space[:n * m].reshape(m, n).T
    out[...] = matrix
    return out


def _tokens(data: pa.Buffer, begin: np.ndarray, end: np.ndarray) -> pa.Array:
    """The strings data[begin[i]:end[i]] as the even elements of a string array over data (no
    copy): offsets begin0, end0, begin1, end1, ...; the odd elements (what lies between) are
    null, so kernels skip them."""
    k = len(begin)
    offsets = np.empty(2 * k, np.int32 if data.size < 2**31 else np.int64)
    offsets[0::2] = begin
    offsets[1::2] = end
    kind = pa.StringArray if offsets.dtype == np.int32 else pa.LargeStringArray
    valid = pa.py_buffer(b"\x55" * ((2 * k + 6) // 8))  # bits 1, 0, 1, 0, ...
    return kind.from_buffers(2 * k - 1, pa.py_buffer(offsets), data, valid, k - 1)


def _evens(array: pa.Array, dtype) -> np.ndarray:
    """The even elements of a fixed-width array computed from _tokens."""
    values = np.frombuffer(array.buffers()[1], dtype)[array.offset:array.offset + len(array)]
    return values[0::2]


def _measurement_codes(heads: list[_Head], row_heads: np.ndarray, names: dict) -> np.ndarray:
    """A small integer per row naming its measurement."""
    distinct = np.unique(row_heads)
    lookup = np.zeros(int(distinct[-1]) + 1, np.int64)
    lookup[distinct] = [names.setdefault(heads[i].name, len(names)) for i in distinct.tolist()]
    return lookup[row_heads]


def _kind(sample: bytes) -> str:
    """A field value's kind as the exact parser decides it (strings never come here)."""
    if sample[-1:] in (b"i", b"u"):
        return "integer" if sample[-1:] == b"i" else "unsigned"
    text = sample.decode("utf-8")
    return "boolean" if text in _TRUE or text in _FALSE else "float"


_HEADS: dict[str, tuple] = {}  # head text -> _head(text), across requests (the same series
_HEADS_MAX = 100_000           # come back in every batch)


def _head(text: str) -> tuple[str, tuple, tuple, tuple]:
    """Measurement, tags, (measurement, sorted tags) and tag keys of a head; the shape
    already guarantees `k=v` pieces with nothing empty."""
    known = _HEADS.get(text)
    if known is not None:
        return known
    pieces = text.split(",")
    tags = tuple(tuple(piece.split("=")) for piece in pieces[1:])
    keys = {k for k, _ in tags}
    if len(keys) != len(tags) or TIME in keys:
        raise _Decline  # a repeated tag or one named "time": the exact parser's error
    if len(_HEADS) >= _HEADS_MAX:
        _HEADS.clear()
    known = _HEADS[text] = (pieces[0], tags, (pieces[0], tuple(sorted(tags))),
                            tuple(k for k, _ in tags))
    return known


def _has_duplicates(series: np.ndarray, micros: np.ndarray) -> bool:
    """Whether two rows have the same series and time."""
    if len(micros) < 2:
        return False
    order = np.lexsort((micros, series))
    return bool(((np.diff(series[order]) == 0) & (np.diff(micros[order]) == 0)).any())


def _merge_order(at: dict[str, tuple[int, int]], keys, first_line: dict[str, int]) -> None:
    """Add the exact parser's keys (in its order) to `at`, keeping each key's earliest line;
    keys first seen on one line keep that line's order."""
    for rank, key in enumerate(keys):
        mine = (first_line[key], rank)
        if key not in at or mine < at[key]:
            at[key] = mine
