"""`omnilake serve`: the PostgreSQL wire server over one shared engine.

One asyncio loop accepts connections and moves bytes; statements run on a thread pool
(DataFusion releases the GIL), so one slow query never stalls other clients. SIGINT/SIGTERM
stop accepting, give running statements a grace period, then flush pending rows and close.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import ssl

from omnilake import errors as E
from omnilake.catalog.users import Users
from omnilake.engine.engine import Engine
from omnilake.server.auth import Authenticator
from omnilake.server.connection import Connection, new_secret
from omnilake.server.constant_results import ConstantResults
from omnilake.server.pg_catalog import PgCatalog
from omnilake.server.pool import StatementPool
from omnilake.server.replay import ReplayProtocol

log = logging.getLogger(__name__)

SERVER_VERSION = "16.4 (OmniLake 0.1.0)"


class Server:
    # ParameterStatus sent at startup (names as PostgreSQL reports them).
    REPORTED = ("server_version", "server_encoding", "client_encoding", "DateStyle", "TimeZone",
                "integer_datetimes", "standard_conforming_strings", "IntervalStyle",
                "is_superuser", "session_authorization", "application_name")

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 5433,
                 tls_cert: str | None = None, tls_key: str | None = None, workers: int = 32,
                 http_port: int | None = None):
        self.engine = engine
        self.http_port = http_port  # InfluxDB line protocol over HTTP, when given
        self.http = None
        self.host, self.port = host, port
        self.users = Users(engine.warehouse)
        self.auth = Authenticator(self.users)
        self.tls = None
        if tls_cert or tls_key:
            if not (tls_cert and tls_key):
                raise E.InvalidParameterValue("TLS needs both --tls-cert and --tls-key")
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(tls_cert, tls_key)
        self.pool = StatementPool(workers, thread_name_prefix="omnilake-query")
        self.connections: dict[int, Connection] = {}
        self.constant_results = ConstantResults()
        self._next_pid = os.getpid() * 1000 % 2_000_000_000
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        PgCatalog.install(engine, self)

    def check_bind(self) -> None:
        """Without users, anyone who can reach the port is trusted: loopback only. The HTTP
        ingest endpoint has no authentication yet: loopback only, always."""
        if self.http_port is not None and not _is_loopback(self.host):
            raise E.InvalidAuthorization(
                f"refusing HTTP line-protocol ingest on {self.host}: it has no authentication yet",
                hint="listen on 127.0.0.1, or leave out --http-port")
        if self.users.any():
            return
        if not _is_loopback(self.host):
            raise E.InvalidAuthorization(
                f"refusing to listen on {self.host} without users: anyone who can reach it would "
                "get full access",
                hint="create a user first (omnilake sql \"CREATE USER admin PASSWORD '...'\"), "
                     "or listen on 127.0.0.1")

    def session_defaults(self, user: str, params: dict[str, str]) -> dict[str, str]:
        found = self.users.get(user)
        superuser = found is None or found.superuser
        return {"server_version": SERVER_VERSION, "server_version_num": "160004",
                "server_encoding": "UTF8", "client_encoding": "UTF8",
                "datestyle": "ISO, MDY", "timezone": "UTC", "integer_datetimes": "on",
                "standard_conforming_strings": "on", "intervalstyle": "postgres",
                "is_superuser": "on" if superuser else "off", "session_authorization": user,
                "application_name": params.get("application_name", ""),
                "max_identifier_length": "63", "default_transaction_read_only": "off",
                "transaction_read_only": "off", "lc_collate": "C", "lc_ctype": "C",
                "user": user}

    # -- connections ----------------------------------------------------------------------
    def register(self, conn: Connection) -> tuple[int, int]:
        self._next_pid += 1
        pid = self._next_pid
        self.connections[pid] = conn
        return pid, new_secret()

    def forget(self, conn: Connection) -> None:
        if self.connections.get(conn.pid) is conn:
            del self.connections[conn.pid]

    def cancel(self, pid: int, secret: int) -> None:
        conn = self.connections.get(pid)
        if conn is not None and conn.secret == secret:
            conn.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        connection = Connection(self, reader, writer)
        writer.transport.get_protocol().connection = connection
        try:
            await connection.serve()
        finally:
            self._tasks.discard(task)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self.check_bind()
        def protocol() -> ReplayProtocol:  # asyncio.start_server's, with replayed exchanges
            return ReplayProtocol(asyncio.StreamReader(limit=1 << 20), self._accept)

        self._server = await asyncio.get_running_loop().create_server(protocol, self.host,
                                                                      self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("omnilake serving on %s:%d", self.host, self.port)
        if self.http_port is not None:
            from omnilake.server.http_ingest import start_http_ingest
            self.http = await start_http_ingest(self.engine, self.host, self.http_port)
            self.http_port = self.http.port
            log.info("line-protocol ingest on http://%s:%d/write", self.host, self.http_port)

    async def stop(self, grace: float = 10.0) -> None:
        if self._server is not None:
            self._server.close()
        if self.http is not None:
            await self.http.stop()
        for conn in list(self.connections.values()):
            await conn.shutdown()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.engine.close()  # flushes pending rows

    async def serve_until_signal(self, ready=None) -> None:
        await self.start()
        if ready is not None:
            ready(self)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await self.stop()


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(engine: Engine, host: str, port: int, tls_cert: str | None = None,
          tls_key: str | None = None, ready=None, http_port: int | None = None) -> None:
    if engine.settings.load_file_from is None:
        engine.blobs.load_from = ()  # clients must not read the server's files unless allowed
    loop_factory = event_loop(engine.settings.event_loop)
    server = Server(engine, host, port, tls_cert, tls_key, http_port=http_port)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.serve_until_signal(ready))


def event_loop(choice: str):
    """The loop factory for the `event_loop` setting (None: asyncio's own). uvloop answers a
    request with a fixed reply for ~0.015 ms of CPU against asyncio's ~0.04, and that is most
    of what a replayed exchange (server/replay.py) costs."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise E.InvalidParameterValue(
                "event_loop=uvloop but uvloop is not installed",
                hint="pip install uvloop (not available on Windows), or use event_loop=auto") from None
        return None
    return uvloop.new_event_loop
