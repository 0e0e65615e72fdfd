"""COPY FROM STDIN and COPY TO STDOUT in PostgreSQL's text, csv and binary formats.

Incoming data is parsed in chunks of whole lines (Arrow's CSV reader for text and csv) and
written as it arrives, through the same checked, logged insert path as INSERT; the rows of
one COPY are buffered per chunk, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlglot import exp

from omnilake import errors as E
from omnilake.engine import dml, rewrites
from omnilake.engine.tables import load, split_name
from omnilake.engine.blobs import for_client
from omnilake.server.codecs import binary_encoder, decode_parameter, text_encoder

if TYPE_CHECKING:
    from omnilake.engine.engine import Session

BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
CHUNK_BYTES = 8 << 20  # rows are written every ~8 MiB of input


@dataclass
class CopySpec:
    direction: str  # "in" or "out"
    table: tuple[str, str] | None
    names: list[str]
    query: exp.Expression | None
    format: str = "text"
    delimiter: str = "\t"
    null: str = "\\N"
    header: bool = False
    quote: str = '"'
    columns: int = 0

    @property
    def binary(self) -> bool:
        return self.format == "binary"


def parse_copy(session: "Session", tree: exp.Copy) -> CopySpec:
    kind = tree.args.get("kind")  # True: FROM, False: TO
    files = tree.args.get("files") or []
    target = files[0].name.upper() if files else ""
    if kind and target != "STDIN" or not kind and target != "STDOUT":
        raise E.NotSupportedError("COPY works with STDIN and STDOUT only",
                                  hint="use COPY t FROM STDIN / COPY t TO STDOUT (psql: \\copy)")
    this = tree.this
    spec = CopySpec("in" if kind else "out", None, [], None)
    if isinstance(this, exp.Schema):
        spec.names = [ident.name for ident in this.expressions]
        this = this.this
    if isinstance(this, exp.Table):
        rewrites.fold_identifiers(this)
        spec.table = split_name(this, session.schema)
    elif isinstance(this, (exp.Subquery, exp.Query)) and not kind:
        spec.query = this.this if isinstance(this, exp.Subquery) else this
    else:
        raise E.SyntaxError("COPY needs a table name or, for COPY TO, a (query)")
    for param in tree.args.get("params") or []:
        _option(spec, param)
    if spec.format not in ("text", "csv", "binary"):
        raise E.InvalidParameterValue(f'COPY format "{spec.format}" not recognized')
    if spec.format == "csv" and spec.delimiter == "\t" and not _given(tree, "DELIMITER"):
        spec.delimiter = ","
    if spec.format == "csv" and not _given(tree, "NULL"):
        spec.null = ""
    if len(spec.delimiter) != 1:
        raise E.InvalidParameterValue("COPY delimiter must be a single one-byte character")
    if spec.table is not None:
        ref = load(session.engine, *spec.table)
        known = [c.name for c in ref.columns()]
        missing = [n for n in spec.names if n not in known]
        if missing:
            raise E.UndefinedColumn(f'column "{missing[0]}" of relation "{spec.table[1]}" '
                                    "does not exist")
        spec.names = spec.names or [c.name for c in ref.columns() if c.name not in ref.generated()]
        spec.columns = len(spec.names)
    return spec


def _given(tree: exp.Copy, name: str) -> bool:
    return any(p.this.name.upper() == name for p in tree.args.get("params") or [])


def _option(spec: CopySpec, param: exp.CopyParameter) -> None:
    name = param.this.name.upper()
    value = param.args.get("expression")
    text = value.name if value is not None else ""
    if name == "FORMAT":
        spec.format = text.lower()
    elif name in ("CSV", "BINARY"):
        spec.format = name.lower()
    elif name == "HEADER":
        spec.header = text.lower() not in ("false", "0", "off")
    elif name == "DELIMITER":
        spec.delimiter = text
    elif name == "NULL":
        spec.null = text
    elif name == "QUOTE":
        spec.quote = text
    elif name in ("ENCODING",):
        if text.upper().replace("-", "") not in ("UTF8",):
            raise E.NotSupportedError("COPY supports UTF8 only")
    else:
        raise E.NotSupportedError(f'COPY option "{name.lower()}" is not supported')


# -- COPY FROM STDIN -----------------------------------------------------------------------
@dataclass
class CopyIn:
    session: "Session"
    spec: CopySpec
    buffer: bytearray = field(default_factory=bytearray)
    count: int = 0
    header_pending: bool = True
    line: int = 0

    def __post_init__(self):
        self.ref = load(self.session.engine, *self.spec.table)
        self.header_pending = self.spec.header or self.spec.binary

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= CHUNK_BYTES:
            self._flush(final=False)

    def finish(self) -> int:
        self._flush(final=True)
        return self.count

    def _flush(self, final: bool) -> None:
        if self.spec.binary:
            return self._flush_binary(final)
        cut = len(self.buffer) if final else self.buffer.rfind(b"\n") + 1
        if self.spec.format == "csv" and not final:
            cut = len(self.buffer) if _balanced_quotes(self.buffer, self.spec.quote) else 0
        if cut <= 0:
            return
        chunk = bytes(self.buffer[:cut])
        del self.buffer[:cut]
        if self.header_pending:
            self.header_pending = False
            chunk = chunk.split(b"\n", 1)[1] if b"\n" in chunk else b""
        if chunk.endswith(b"\\.\n"):
            chunk = chunk[:-3]
        elif chunk.endswith(b"\\.\r\n") or chunk == b"\\.":
            chunk = chunk[:chunk.rfind(b"\\.")]
        if chunk.strip():
            self._write(self._parse_delimited(chunk))

    def _parse_delimited(self, chunk: bytes) -> pa.Table:
        spec = self.spec
        csv = spec.format == "csv"
        names = spec.names
        try:
            table = pacsv.read_csv(
                io.BytesIO(chunk),
                read_options=pacsv.ReadOptions(column_names=names, block_size=CHUNK_BYTES * 2),
                parse_options=pacsv.ParseOptions(delimiter=spec.delimiter, quote_char=spec.quote
                                                 if csv else False, double_quote=csv,
                                                 newlines_in_values=csv),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.large_string() for n in names},
                    null_values=[spec.null], strings_can_be_null=True,
                    quoted_strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            raise E.Error(f"COPY: malformed {spec.format} data: {str(exc).splitlines()[0]}",
                          sqlstate="22P04") from None
        if not csv:
            table = pa.table({n: _unescape_text(table.column(n)) for n in names})
        self.line += table.num_rows
        return table

    def _flush_binary(self, final: bool) -> None:
        data = self.buffer
        pos = 0
        if self.header_pending:
            if len(data) < 19:
                if final:
                    raise E.Error("COPY file signature not recognized", sqlstate="22P04")
                return
            if bytes(data[:11]) != BINARY_SIGNATURE:
                raise E.Error("COPY file signature not recognized", sqlstate="22P04")
            ext = struct.unpack_from("!i", data, 15)[0]
            pos = 19 + ext
            self.header_pending = False
        rows, oids = [], [c.sql_type.oid for c in self._columns()]
        done = False
        while pos + 2 <= len(data):
            count = struct.unpack_from("!h", data, pos)[0]
            if count == -1:
                done = True
                pos += 2
                break
            if count != len(oids):
                raise E.Error(f"row field count is {count}, expected {len(oids)}",
                              sqlstate="22P04")
            p, values = pos + 2, []
            for oid in oids:
                if p + 4 > len(data):
                    break
                length = struct.unpack_from("!i", data, p)[0]
                p += 4
                if length == -1:
                    values.append(None)
                    continue
                if p + length > len(data):
                    break
                values.append(decode_parameter(bytes(data[p:p + length]), oid, True, len(values) + 1))
                p += length
            if len(values) < len(oids):
                break  # an incomplete row: wait for more data
            rows.append(values)
            pos = p
        del self.buffer[:pos]
        if final and not done and self.buffer:
            raise E.Error("COPY: unexpected end of binary data", sqlstate="22P04")
        if rows:
            self._write(pa.table({n: dml.parameter_column([r[i] for r in rows])
                                  for i, n in enumerate(self.spec.names)}))

    def _columns(self):
        by_name = {c.name: c for c in self.ref.columns()}
        return [by_name[n] for n in self.spec.names]

    def _write(self, rows: pa.Table) -> None:
        try:
            self.count += dml.insert_rows(self.session, self.ref, rows, list(self.spec.names))
        except E.Error as err:
            err.message = f"COPY {self.spec.table[1]}: {err.message}"
            raise


def _balanced_quotes(buffer: bytearray, quote: str) -> bool:
    """True when the buffer ends outside a quoted csv field (an even number of quotes)."""
    return buffer.count(quote.encode()) % 2 == 0 and buffer.endswith(b"\n")


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unescape_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """PostgreSQL text format backslash escapes, only for the values that have them."""
    import pyarrow.compute as pc
    if not pc.any(pc.match_substring(column, "\\")).as_py():
        return column
    out = []
    for value in column.to_pylist():
        if value is None or "\\" not in value:
            out.append(value)
            continue
        chars, i = [], 0
        while i < len(value):
            ch = value[i]
            if ch == "\\" and i + 1 < len(value):
                nxt = value[i + 1]
                if nxt in _ESCAPES:
                    chars.append(_ESCAPES[nxt])
                    i += 2
                    continue
                if nxt.isdigit():
                    digits = value[i + 1:i + 4]
                    octal = "".join(d for d in digits if d in "01234567")[:3]
                    chars.append(chr(int(octal, 8)))
                    i += 1 + len(octal)
                    continue
                chars.append(nxt)
                i += 2
                continue
            chars.append(ch)
            i += 1
        out.append("".join(chars))
    return pa.chunked_array([pa.array(out, pa.large_string())])


# -- COPY TO STDOUT ------------------------------------------------------------------------
def copy_out(session: "Session", spec: CopySpec) -> tuple[list[bytes], str]:
    if spec.query is not None:
        result = session.run(spec.query)
    else:
        names = ", ".join(f'"{n}"' for n in spec.names)
        trees = session.parse(f'SELECT {names} FROM "{spec.table[0]}"."{spec.table[1]}"')
        result = session.run(trees[0])
    table = for_client(result, session.engine.blobs).table
    spec.columns = table.num_columns
    if spec.binary:
        return [_binary_out(table)], f"COPY {table.num_rows}"
    if spec.format == "csv":
        sink = io.BytesIO()
        text_columns = {f.name: pa.array([None if v is None else v.decode() for v in
                                          text_encoder(f)(col)], pa.large_string())
                        for f, col in zip(table.schema, table.columns)}
        pacsv.write_csv(pa.table(text_columns) if text_columns else table, sink,
                        pacsv.WriteOptions(include_header=spec.header, delimiter=spec.delimiter,
                                           quoting_style="needed"))
        return [sink.getvalue()], f"COPY {table.num_rows}"
    columns = [text_encoder(f)(col) for f, col in zip(table.schema, table.columns)]
    lines = []
    if spec.header:
        lines.append(spec.delimiter.join(table.column_names).encode() + b"\n")
    null = spec.null.encode()
    delim = spec.delimiter.encode()
    for values in zip(*columns):
        lines.append(delim.join(null if v is None else _escape_text(v) for v in values) + b"\n")
    return [b"".join(lines)], f"COPY {table.num_rows}"


def _escape_text(value: bytes) -> bytes:
    if b"\\" in value or b"\t" in value or b"\n" in value or b"\r" in value:
        value = (value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
                 .replace(b"\r", b"\\r"))
    return value


def _binary_out(table: pa.Table) -> bytes:
    columns = [binary_encoder(f)(col) for f, col in zip(table.schema, table.columns)]
    parts = [BINARY_SIGNATURE, struct.pack("!ii", 0, 0)]
    count = struct.pack("!h", table.num_columns)
    for values in zip(*columns):
        parts.append(count)
        for v in values:
            parts.append(b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v)
    parts.append(b"\xff\xff")
    return b"".join(parts)


