"""An embedded optd server for the examples: `python -m app.cli serve` on a free port.

The examples start one when no `--url` is given, so each runs with one command. The
server uses the embedded in-memory store (any `OPTD_*` variable of the caller's
environment is dropped, so a configured Redis is not touched), its output goes to a
temporary file that is shown if it fails to start, and it is stopped when the block
ends — or at interpreter exit, should the block never end.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """`optd serve` as a child process; `url` is set once `/readyz` answers 200."""

    def __init__(self, port: int | None = None, log_level: str = "warning") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(mode="w+")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPTD_")}
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--log-level", log_level],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"optd serve exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"optd serve was not ready after {timeout:g} s:\n{self.output()}")

    def output(self) -> str:
        if self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


@contextlib.contextmanager
def optd_server(url: str | None = None, *, quiet: bool = False) -> Iterator[str]:
    """Yield `url` as it is, or the URL of an embedded server started for the block."""
    if url:
        if not quiet:
            print(f"watch it live: {url.rstrip('/')}/ui", flush=True)
        yield url.rstrip("/")
        return
    server = EmbeddedServer()
    try:
        server.wait_ready()
        if not quiet:
            print(f"started an embedded optd server at {server.url}", flush=True)
            print(f"watch it live: {server.url}/ui", flush=True)
        yield server.url
    finally:
        server.stop()
