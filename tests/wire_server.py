"""Start `omnilake serve` as a real child process on a free loopback port, for wire tests;
or a server on a thread of the test's own process, where a test must look inside it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


@dataclass
class ServerProcess:
    process: subprocess.Popen
    host: str
    port: int
    warehouse: str
    http_port: int | None = None

    def dsn(self, user: str = "tester", password: str | None = None) -> str:
        from urllib.parse import quote
        auth = user if password is None else f"{user}:{quote(password)}"
        return f"postgresql://{auth}@{self.host}:{self.port}/omnilake"

    def conninfo(self, user: str = "tester", **extra) -> str:
        parts = [f"host={self.host}", f"port={self.port}", "dbname=omnilake", f"user={user}"]
        parts += [f"{k}='{v}'" for k, v in extra.items()]
        return " ".join(parts)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(warehouse: str, *args: str, timeout: float = 60) -> ServerProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "omnilake", "serve", "-w", warehouse, "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=os.path.expanduser("~"))  # not the checkout: its omnilake/ would shadow the install
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"serving .* on ([\d.]+):(\d+)", line)
        if found:
            _drain(process)
            http = re.search(r"line protocol on http://[\d.]+:(\d+)", line)
            return ServerProcess(process, found.group(1), int(found.group(2)), warehouse,
                                 int(http.group(1)) if http else None)
    process.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


def _drain(process: subprocess.Popen) -> None:
    """Keep reading the server's log so a full pipe never blocks it."""

    def pump():
        for _ in process.stdout:
            pass
    threading.Thread(target=pump, daemon=True).start()


@contextlib.contextmanager
def in_process_server(warehouse: str):
    """A wire server (server.Server) on a thread of this process, its statement-pool trips
    counted in `trips`; `conninfo` for psycopg."""
    import omnilake
    from omnilake.server.server import Server

    conn = omnilake.connect(warehouse)
    srv = Server(conn.session.engine, "127.0.0.1", 0)
    trips = []
    run = srv.pool.run
    srv.pool.run = lambda loop, fn, *args: (trips.append(fn), run(loop, fn, *args))[1]
    srv.trips = trips
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    srv.conninfo = f"host=127.0.0.1 port={srv.port} dbname=omnilake user=tester"
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
