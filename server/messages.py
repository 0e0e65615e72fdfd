"""PostgreSQL protocol 3.0 framing: reading client messages and building server messages.

Every message after startup is a type byte, a big-endian int32 length that counts itself,
and a body. Builders return bytes so a reply can be assembled and written in one call.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from omnilake import errors as E

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

MAX_STARTUP = 10_000
MAX_MESSAGE = 1 << 30  # PostgreSQL's own limit for one message

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class ProtocolViolation(E.Error):
    """The client broke the protocol; the connection is answered with an error and closed."""

    sqlstate = "08P01"


@dataclass
class Startup:
    code: int
    body: bytes  # after the code


async def read_startup(reader: asyncio.StreamReader) -> Startup:
    header = await reader.readexactly(8)
    length, code = struct.unpack("!ii", header)
    if not 8 <= length <= MAX_STARTUP:
        raise ProtocolViolation(f"invalid startup packet length {length}")
    return Startup(code, await reader.readexactly(length - 8))


def startup_parameters(body: bytes) -> dict[str, str]:
    """The name/value pairs of a StartupMessage."""
    parts = body.split(b"\0")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    parts = parts[:-2]
    if len(parts) % 2:
        raise ProtocolViolation("invalid startup packet: a parameter has no value")
    try:
        return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts), 2)}
    except UnicodeDecodeError:
        raise ProtocolViolation("invalid startup packet: parameters are not UTF-8") from None


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One message: (type byte, body). Raises IncompleteReadError when the client goes away."""
    header = await reader.readexactly(5)
    kind = header[:1]
    length = _I32.unpack_from(header, 1)[0]
    if length < 4 or length > MAX_MESSAGE:
        raise ProtocolViolation(f"invalid message length {length} for message type {kind!r}")
    return kind, await reader.readexactly(length - 4)


class MessageReader:
    """Client messages after startup, read from the socket in large pieces. Knowing whether a
    whole message is already buffered lets the connection hold its replies while the client
    has more to say (one write for Bind/Describe/Execute/Sync instead of one per message)."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.buffer = bytearray()  # deleting from the front is cheap for a bytearray
        # True while waiting on the socket with nothing buffered anywhere (the stream's own
        # buffer is empty when its read suspends); data arriving then starts a new exchange.
        self.waiting = False

    def has_message(self) -> bool:
        """True when the next message is whole in the buffer (reading it will not wait)."""
        return len(self.buffer) >= 5 and len(self.buffer) > _I32.unpack_from(self.buffer, 1)[0]

    async def read(self) -> tuple[bytes, bytes]:
        """One message: (type byte, body). Raises IncompleteReadError when the client goes away."""
        while len(self.buffer) < 5:
            await self._fill(5)
        length = _I32.unpack_from(self.buffer, 1)[0]
        if length < 4 or length > MAX_MESSAGE:
            raise ProtocolViolation(f"invalid message length {length} for message type "
                                    f"{bytes(self.buffer[:1])!r}")
        while len(self.buffer) < length + 1:
            await self._fill(length + 1)
        kind, body = bytes(self.buffer[:1]), bytes(self.buffer[5:length + 1])
        del self.buffer[:length + 1]
        return kind, body

    async def _fill(self, wanted: int) -> None:
        self.waiting = True
        try:
            data = await self.reader.read(max(1 << 16, wanted - len(self.buffer)))
        finally:
            self.waiting = False
        if not data:
            raise asyncio.IncompleteReadError(bytes(self.buffer), wanted)
        self.buffer += data


class Reader:
    """Reads the fields of one message body; a short or malformed body is a protocol error."""

    def __init__(self, body: bytes):
        self.body = body
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.body):
            raise ProtocolViolation("message is shorter than its contents say")
        chunk = self.body[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return _I16.unpack(self._take(2))[0]

    def int32(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def uint32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def byte(self) -> bytes:
        return self._take(1)

    def bytes(self, n: int) -> bytes:
        return self._take(n)

    def cstring(self) -> str:
        end = self.body.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("string in message is not terminated")
        raw = self.body[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise E.Error("invalid byte sequence for encoding \"UTF8\"",
                          sqlstate="22021") from None

    def rest(self) -> bytes:
        chunk = self.body[self.pos:]
        self.pos = len(self.body)
        return chunk


# -- server messages ---------------------------------------------------------------------
def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def authentication(code: int, payload: bytes = b"") -> bytes:
    return message(b"R", _I32.pack(code) + payload)


AUTH_OK = authentication(0)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", _I32.pack(pid) + _I32.pack(secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


EMPTY_QUERY = message(b"I")
PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
PORTAL_SUSPENDED = message(b"s")
COPY_DONE = message(b"c")


def parameter_description(oids: list[int]) -> bytes:
    return message(b"t", _I16.pack(len(oids)) + b"".join(_U32.pack(o) for o in oids))


def row_description(fields: list[tuple[str, int, int, int]]) -> bytes:
    """fields: (name, type oid, type size, format code)."""
    body = [_I16.pack(len(fields))]
    for name, oid, size, fmt in fields:
        body.append(cstr(name) + struct.pack("!IhIhih", 0, 0, oid, size, -1, fmt))
    return message(b"T", b"".join(body))


def data_row(values: list[bytes | None]) -> bytes:
    body = [_I16.pack(len(values))]
    for v in values:
        if v is None:
            body.append(b"\xff\xff\xff\xff")
        else:
            body.append(_I32.pack(len(v)))
            body.append(v)
    return message(b"D", b"".join(body))


def copy_response(kind: bytes, binary: bool, columns: int) -> bytes:
    fmt = 1 if binary else 0
    return message(kind, struct.pack("!bh", fmt, columns) + _I16.pack(fmt) * columns)


def copy_data(chunk: bytes) -> bytes:
    return message(b"d", chunk)


def notice(severity: str, text: str) -> bytes:
    return message(b"N", b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr("00000")
                   + b"M" + cstr(text) + b"\0")


def error_response(err: E.Error, severity: str = "ERROR") -> bytes:
    fields = [(b"S", severity), (b"V", severity), (b"C", err.sqlstate), (b"M", err.message)]
    if err.detail:
        fields.append((b"D", err.detail))
    if err.hint:
        fields.append((b"H", err.hint))
    if err.position:
        fields.append((b"P", str(err.position)))
    return message(b"E", b"".join(code + cstr(value) for code, value in fields) + b"\0")
