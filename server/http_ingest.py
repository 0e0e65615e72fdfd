"""HTTP ingest compatible with InfluxDB's write endpoints (asyncio, standard library only).

- `POST /write?db=<schema>&precision=n|ns|u|us|ms|s|m|h` (InfluxDB 1.x)
- `POST /api/v2/write?bucket=<schema>&org=...&precision=ns|us|ms|s` (InfluxDB 2.x)
- `GET|HEAD /ping` -> 204, `GET /health` -> 200 (what clients probe), `POST /query` -> an
  empty result (Telegraf's 1.x output sends `CREATE DATABASE` there at start).

The body is line protocol (server/line_protocol.py), optionally `Content-Encoding: gzip`,
sent with Content-Length or chunked. `db`/`bucket` names the schema (created if missing; the
engine's default schema when absent). Success is `204 No Content` once the batch is durable
(in the write-ahead log; see engine/writes.py). A bad line answers `400` with the line number
and writes nothing of the batch. Authentication is not implemented: bind to a trusted address.

    server = HttpIngest(engine, "127.0.0.1", 8086)
    await server.start()        # inside a running event loop (the wire server's)
    ...
    await server.stop()

or `start_in_thread(engine, host, port)` for an event loop of its own in a daemon thread.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from omnilake import errors as E
from omnilake.server.line_protocol import V2_PRECISIONS, LineProtocolError, parse

if TYPE_CHECKING:
    from omnilake.engine.engine import Engine

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024 * 1024
MAX_HEADER = 64 * 1024
_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error"}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"


class HttpIngest:
    """The HTTP listener; `start()` inside a running event loop, `stop()` to close it."""

    def __init__(self, engine: "Engine", host: str = "127.0.0.1", port: int = 8086):
        self.engine = engine
        self.host = host
        self.port = port
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> asyncio.AbstractServer:
        self.server = await asyncio.start_server(self._connection, self.host, self.port,
                                                 limit=MAX_HEADER)
        self.port = self.server.sockets[0].getsockname()[1]  # the real one when port was 0
        return self.server

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    # -- HTTP/1.1 --------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                try:
                    method, target, version = request_line.decode("latin-1").split()
                except ValueError:
                    await self._send(writer, Response(400, _json(error="malformed request line")),
                                     close=True)
                    return
                headers = await self._headers(reader)
                if headers is None:
                    await self._send(writer, Response(400, _json(error="malformed headers")), True)
                    return
                keep_alive = (headers.get("connection", "").lower() != "close"
                              and version.upper() == "HTTP/1.1")
                if headers.get("expect", "").lower() == "100-continue":  # curl, large bodies
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body, error = await self._body(reader, headers)
                if error is not None:
                    await self._send(writer, error, close=True)
                    return
                response = await self._handle(method.upper(), target, headers, body)
                await self._send(writer, response, close=not keep_alive,
                                 head=method.upper() == "HEAD")
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # already gone
                pass

    async def _headers(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                return None
            headers[name.strip().lower()] = value.strip()

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]):
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size_line = await reader.readline()
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None, Response(400, _json(error="malformed chunk size"))
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks), None
                total += size
                if total > MAX_BODY:
                    return None, Response(413, _json(error="request body too large"))
                chunks.append(await reader.readexactly(size))
                await reader.readline()
        length = headers.get("content-length")
        if length is None:
            return b"", None
        try:
            size = int(length)
        except ValueError:
            return None, Response(400, _json(error="invalid Content-Length"))
        if size > MAX_BODY:
            return None, Response(413, _json(error="request body too large"))
        return await reader.readexactly(size), None

    async def _send(self, writer: asyncio.StreamWriter, response: Response, close: bool = False,
                    head: bool = False) -> None:
        reason = _REASONS.get(response.status, "")
        lines = [f"HTTP/1.1 {response.status} {reason}", "X-Influxdb-Version: 1.8-omnilake"]
        if response.status != 204:
            lines += [f"Content-Type: {response.content_type}",
                      f"Content-Length: {len(response.body)}"]
        if close:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if response.status != 204 and not head:
            writer.write(response.body)
        await writer.drain()

    # -- endpoints -------------------------------------------------------------------------
    async def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes):
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        if path == "/ping":
            return Response(204) if method in ("GET", "HEAD") else Response(405)
        if path == "/health":
            return Response(200, _json(name="omnilake", status="pass", message="ready"))
        if path == "/query":
            # Telegraf's 1.x output runs CREATE DATABASE at start; schemas are made on write.
            return Response(200, _json(results=[{"statement_id": 0}]))
        if path not in ("/write", "/api/v2/write"):
            return Response(404, _json(error=f"no endpoint {path}"))
        v2 = path == "/api/v2/write"
        if method != "POST":
            return Response(405, _error(v2, "method not allowed", "method not allowed"))
        precision = query.get("precision", "ns")
        if v2 and precision not in V2_PRECISIONS:
            return Response(400, _error(v2, "invalid", f"invalid precision {precision!r}: "
                                        "one of ns, us, ms, s"))
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                return Response(400, _error(v2, "invalid", "the body is not valid gzip"))
        elif encoding not in ("identity", ""):
            return Response(415, _error(v2, "unsupported", f"Content-Encoding {encoding} is not "
                                        "supported; use gzip or none"))
        schema = query.get("bucket" if v2 else "db") or self.engine.settings.schema
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.write, body, precision, schema)
        except (LineProtocolError, E.DataError, E.ProgrammingError) as exc:
            return Response(400, _error(v2, "invalid", str(exc).splitlines()[0]))
        except E.Error as exc:
            return Response(500, _error(v2, "internal error", str(exc).splitlines()[0]))
        except Exception as exc:  # a bug: keep serving, tell the client
            log.exception("line protocol write failed")
            return Response(500, _error(v2, "internal error", str(exc)))
        return Response(204)

    def write(self, body: bytes, precision: str = "ns", schema: str | None = None) -> int:
        """Parse and write one batch (blocking); the number of points written."""
        from omnilake.engine.ingest import write_measurements
        batch = parse(body, precision)
        if not batch.measurements:
            return 0
        session = self.engine.session()
        kinds = {n: dict(m.kinds) for n, m in batch.measurements.items()}
        lines = {n: dict(m.first_line) for n, m in batch.measurements.items()}
        return write_measurements(session, schema or self.engine.settings.schema, batch.tables(),
                                  kinds, lines)


def _json(**values) -> bytes:
    return json.dumps(values).encode()


def _error(v2: bool, code: str, message: str) -> bytes:
    return _json(code=code, message=message) if v2 else _json(error=message)


async def start_http_ingest(engine: "Engine", host: str = "127.0.0.1",
                            port: int = 8086) -> HttpIngest:
    """Start the listener in the running event loop (for `omnilake serve --http-port`)."""
    server = HttpIngest(engine, host, port)
    await server.start()
    return server


class ThreadedHttpIngest:
    """The listener on an event loop of its own, in a daemon thread (tests, benchmarks)."""

    def __init__(self, engine: "Engine", host: str = "127.0.0.1", port: int = 0):
        self.loop = asyncio.new_event_loop()
        self.ingest = HttpIngest(engine, host, port)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.ingest.start())
            except BaseException as exc:  # e.g. the port is taken
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name="omnilake-http-ingest")
        self.thread.start()
        ready.wait()
        if failure:
            raise E.OperationalError(f"cannot listen on {host}:{port}: {failure[0]}")

    @property
    def port(self) -> int:
        return self.ingest.port

    def close(self) -> None:
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.ingest.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def start_in_thread(engine: "Engine", host: str = "127.0.0.1", port: int = 0) -> ThreadedHttpIngest:
    return ThreadedHttpIngest(engine, host, port)
