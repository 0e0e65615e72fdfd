"""PostgreSQL protocol messages built and read by hand, for wire tests that send what no
client library would (or need to see the exact bytes)."""

from __future__ import annotations

import socket
import struct


def startup(user: str = "tester") -> bytes:
    body = struct.pack("!i", 196608) + b"user\0" + user.encode() + b"\0database\0omnilake\0\0"
    return struct.pack("!i", len(body) + 4) + body


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def read_messages(sock: socket.socket, until: bytes = b"Z", limit: float = 20) -> list[tuple[bytes, bytes]]:
    """Messages up to and including the first of type `until` (or until the socket closes)."""
    sock.settimeout(limit)
    data, out = b"", []
    while True:
        while len(data) >= 5:
            length = struct.unpack("!i", data[1:5])[0]
            if len(data) < 1 + length:
                break
            out.append((data[:1], data[5:1 + length]))
            data = data[1 + length:]
            if out[-1][0] == until:
                return out
        chunk = sock.recv(65536)
        if not chunk:
            return out
        data += chunk


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=20)
    sock.sendall(startup())
    kinds = [k for k, _ in read_messages(sock)]
    assert kinds[0] == b"R" and kinds[-1] == b"Z"
    return sock


def error_code(body: bytes) -> str:
    fields = dict((f[:1], f[1:].decode()) for f in body.split(b"\0") if f)
    return fields[b"C"]


def parse(name: bytes, sql: bytes) -> bytes:
    return message(b"P", name + b"\0" + sql + b"\0\0\0")


def bind(statement: bytes, portal: bytes = b"") -> bytes:
    return message(b"B", portal + b"\0" + statement + b"\0\0\0\0\0\0\0")


def run_portal(statement: bytes) -> bytes:
    """Bind, Describe, Execute, Sync: what psycopg sends for a prepared statement."""
    return (bind(statement) + message(b"D", b"P\0") + message(b"E", b"\0\0\0\0\0")
            + message(b"S", b""))


def rows(messages) -> list[list[bytes]]:
    out = []
    for kind, body in messages:
        if kind == b"D":
            values, pos = [], 2
            for _ in range(struct.unpack("!h", body[:2])[0]):
                length = struct.unpack("!i", body[pos:pos + 4])[0]
                values.append(None if length < 0 else body[pos + 4:pos + 4 + length])
                pos += 4 + max(length, 0)
            out.append(values)
    return out


def columns(messages) -> list[bytes]:
    body = [b for k, b in messages if k == b"T"][0]
    names, pos = [], 2
    for _ in range(struct.unpack("!h", body[:2])[0]):
        end = body.index(b"\0", pos)
        names.append(body[pos:end])
        pos = end + 1 + 18
    return names


def read_messages_from(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while len(data) >= 5:
        length = struct.unpack("!i", data[1:5])[0]
        out.append((data[:1], data[5:1 + length]))
        data = data[1 + length:]
    return out
