"""Exchanges answered again from the socket's read callback, when a client repeats itself.

Connection pools, health checks and polling dashboards send the same bytes over and over:
psycopg's prepared `SELECT 1` is a 44-byte Bind/Describe/Execute/Sync, answered by the same
76 bytes each time. Going through asyncio's streams and the message loop costs the server
~0.06 ms of CPU for it, as much as a whole round trip to PostgreSQL (0.05-0.06 ms).

A connection remembers an exchange (the request bytes that arrived while it was idle, and
its whole reply) when replaying it later cannot differ from running it again:
- it started with nothing buffered, no open portal and no transaction, and nothing else
  arrived until its reply was complete;
- every message in it took a path that answers the same each time, as its handler vouches
  (an allowlist, so a path added later is not replayed unless it says so): a Query, Bind,
  Describe (portal) or Execute of a constant statement (`constant_results`: the answer
  depends on the text alone) without parameters, answered from its kept reply, or a Sync;
  not a message skipped after an error, nor one that failed;
- it ended with ReadyForQuery, idle, and nothing was written before that.
Such an exchange leaves the connection as it found it. Any other exchange may change what
the remembered ones depend on (a Parse or Close of their statement, a SET, a BEGIN), so it
forgets them all. A repeat is answered only while the connection is idle with nothing
buffered, in autocommit outside a transaction, with no portal open and nothing waiting to be
written; otherwise the message loop runs it as usual.
"""

from __future__ import annotations

import asyncio

from omnilake.server import messages as M

MAX_EXCHANGES = 16
MAX_REQUEST = 1024
MAX_REPLY = 4096
_IDLE = M.ready_for_query("I")


class ReplayProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol with a first look at each piece of data: a repeat of a
    remembered exchange is answered there, without waking the connection's task."""

    connection = None  # the Connection served, once it exists

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or not connection.replay(data):
            super().data_received(data)


class Exchanges:
    """One connection's remembered exchanges, and the one in progress."""

    def __init__(self):
        self._replies: dict[bytes, bytes] = {}
        self.request: bytes | None = None  # the exchange in progress, while still replayable
        self.replayed = 0  # exchanges answered from here

    def get(self, request: bytes) -> bytes | None:
        return self._replies.get(request)

    def start(self, request: bytes) -> None:
        self.request = request if len(request) <= MAX_REQUEST else None

    def spoil(self) -> None:
        """The exchange in progress is not replayable (and may change the connection)."""
        self.request = None
        self._replies.clear()

    def finish(self, out: list[bytes]) -> None:
        """The exchange in progress ends with the replies `out` (all that it wrote)."""
        request, self.request = self.request, None
        if request is None:
            return
        if not out or out[-1] != _IDLE:
            self._replies.clear()
            return
        reply = b"".join(out)
        if len(reply) > MAX_REPLY:
            return
        if len(self._replies) >= MAX_EXCHANGES:
            self._replies.pop(next(iter(self._replies)))
        self._replies[request] = reply
