"""A fault-injecting HTTP proxy for the S3 tests, stdlib only: it sits between OmniLake and
moto_server and, per request and at the rates given, answers 500, drops the connection
(before forwarding, or after, so the request is applied but its response lost), delays, or
stalls longer than the client's request timeout. Every request goes upstream on a fresh
connection (`Connection: close`); the client side keeps its connection while upstream allows.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field

_ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
               b"<Message>injected by the test proxy</Message></Error>")


@dataclass
class FaultProxy:
    upstream_port: int
    error_rate: float = 0.0
    drop_rate: float = 0.0
    delay_rate: float = 0.0
    stall_rate: float = 0.0
    stall_s: float = 2.0
    seed: int = 0
    port: int = 0
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("requests", "errors", "drops", "delays", "stalls"), 0))

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._clients: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a store that went away."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            clients, self._clients = self._clients, set()
        for client in clients:
            _close(client)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide(self) -> str:
        with self._lock:
            self.counts["requests"] += 1
            r = self._rng.random()
            for kind, rate in (("errors", self.error_rate), ("drops", self.drop_rate),
                               ("stalls", self.stall_rate), ("delays", self.delay_rate)):
                if r < rate:
                    self.counts[kind] += 1
                    return kind
                r -= rate
            return "ok"

    def _serve(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while True:
                request = _read_request(reader, client)
                if request is None:
                    return
                fate = self._decide()
                if fate == "errors":
                    client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: "
                                   b"application/xml\r\nContent-Length: %d\r\nConnection: close"
                                   b"\r\n\r\n%s" % (len(_ERROR_BODY), _ERROR_BODY))
                    return
                if fate == "drops" and self._rng.random() < 0.5:
                    return  # cut before the store saw the request
                if fate == "delays":
                    time.sleep(self._rng.uniform(0.05, 0.3))
                if fate == "stalls":
                    time.sleep(self.stall_s)
                response = _forward(request, self.upstream_port)
                if fate == "drops":
                    return  # the store applied the request; its response is lost
                client.sendall(response)
                if b"connection: close" in response.split(b"\r\n\r\n", 1)[0].lower():
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            _close(client)


def _read_request(reader, client: socket.socket) -> bytes | None:
    """One whole request, rewritten to `Connection: close` with any `Expect: 100-continue`
    answered here; None at end of stream."""
    lines = []
    while True:
        line = reader.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            if lines:
                break
            continue
        lines.append(line)
    headers = {}
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
        if name.strip().lower() in ("connection", "expect", "keep-alive"):
            continue
        kept.append(line)
    kept.append(b"Connection: close\r\n")
    if headers.get("expect", "").lower() == "100-continue":
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = reader.readline()
            parts.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = reader.readline()
                    parts.append(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                break
            parts.append(reader.read(size + 2))
        body = b"".join(parts)
    elif headers.get("content-length"):
        body = reader.read(int(headers["content-length"]))
    return b"".join(kept) + b"\r\n" + body


def _forward(request: bytes, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as upstream:
        upstream.sendall(request)
        chunks = []
        while True:
            chunk = upstream.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
