"""A real S3 server on loopback for the tests: `moto_server` in a separate process
(in-process moto starved in a trial, see DESIGN.md), addressed path-style."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

ACCESS_KEY = "omnilake-test"
SECRET_KEY = "omnilake-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen | None = None
    check_credentials: bool = False  # moto then refuses keys that its IAM does not know

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "MotoServer":
        env = dict(os.environ)
        if self.check_credentials:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def filesystem(self, endpoint: str | None = None):
        import pyarrow.fs as pafs
        return pafs.S3FileSystem(endpoint_override=endpoint or self.endpoint, scheme="http",
                                 access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
                                 allow_bucket_creation=True)

    def create_bucket(self, name: str) -> str:
        self.filesystem().create_dir(name)
        return name

    def settings(self, endpoint: str | None = None) -> dict:
        """connect() keyword arguments that reach this server."""
        return {"s3_endpoint": endpoint or self.endpoint, "s3_access_key_id": ACCESS_KEY,
                "s3_secret_access_key": SECRET_KEY, "s3_region": REGION}
