"""Fixtures: a real `optd serve` per store (embedded memory and a private Redis), started
once per test run, and helpers for MockTransport-based unit tests.

The Redis and server start-up logic is a trimmed copy of the server's
`tests/redisproc.py` and `tests/test_serve.py`, so this suite does not depend on the
layout of the server's tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

CLIENT_DIR = Path(__file__).resolve().parents[1]
ROOT = CLIENT_DIR.parents[1]  # the optd repository (the server is `python -m app.cli`)
try:
    import optd_client  # noqa: F401
except ImportError:  # not installed: test the working tree
    sys.path.insert(0, str(CLIENT_DIR))

# the adapter's tests need the `torch` extra; without it the rest still runs
collect_ignore = [] if find_spec("torch") else ["test_client_torch.py", "test_client_convert.py"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, ready: object, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        if callable(ready) and ready():
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not become ready in 20 s")


class Proc:
    """A child process whose output goes to a log file (a pipe nobody reads can fill up)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"optd-client-{name}-"))
        self.log_path = self.dir / "log.txt"
        self._log: IO[bytes] = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis() -> tuple[Proc, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install -y redis-server)")
    port = free_port()
    proc = Proc("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""])

    def ping() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    _wait("redis-server", ping, proc.proc, proc.log_path)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_server(env: dict[str, str]) -> tuple[Proc, str]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPTD_")} | env
    args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"]
    proc = Proc("server", args, full_env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    _wait("optd serve", ready, proc.proc, proc.log_path)
    return proc, url


@pytest.fixture(scope="session", params=["memory", "redis"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a running `optd serve` on the embedded store, then on Redis."""
    procs: list[Proc] = []
    try:
        env: dict[str, str] = {}
        if request.param == "redis":
            redis, redis_url = start_redis()
            procs.append(redis)
            env["OPTD_REDIS_URL"] = redis_url
        server, url = start_server(env)
        procs.insert(0, server)
        yield url
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(params=["float32", "float64"])
def torch_dtype(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A torch dtype for a test's parameters, also set as torch's default dtype while the
    test runs: torch keeps scalar state (`step`, NAdam's `mu_product`) in the default
    dtype, so a float64 run must not round it to float32 (as testdata/gen_torch_vectors.py
    does). Typed `Any` because torch is optional here."""
    import torch

    dtype = getattr(torch, request.param)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield dtype
    finally:
        torch.set_default_dtype(before)
