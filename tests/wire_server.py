"""Start `omnilake serve` as a real child process on a free loopback port, for wire tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
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
    import threading

    def pump():
        for _ in process.stdout:
            pass
    threading.Thread(target=pump, daemon=True).start()
