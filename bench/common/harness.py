"""Processes, a lean HTTP client and CPU accounting for every benchmark (scraping /metrics
and percentiles are bench/common/metrics.py).

Every process we start lives in its own process group and is registered here, so a
crash, Ctrl-C or SIGTERM of the benchmark still stops all of them (try/finally in the
caller plus `atexit` here). Everything binds to loopback on ports the kernel gave us.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]  # the repository: the cwd of every process we start
HOST = "127.0.0.1"
_LIVE: list[Proc] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Proc:
    """A subprocess in its own process group with its output in a temp file (never a pipe
    that could fill up and stall it)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], port: int) -> None:
        self.name, self.port = name, port
        self.log_path = Path(tempfile.mkstemp(prefix=f"optd-bench-{name}-", suffix=".log")[1])
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.append(self)

    def tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; last output:\n{self.tail()}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, sig)  # our own group: pid == pgid
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    for p in list(reversed(_LIVE)):
        p.stop()


def _on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the caller's finally blocks, then atexit


atexit.register(stop_all)
signal.signal(signal.SIGTERM, _on_term)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_redis() -> Proc:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", tempfile.gettempdir(), "--loglevel", "warning",
    ]  # fmt: skip
    return Proc("redis", argv, base_env(), port)


def wait_redis(p: Proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p.check_alive()
        with contextlib.suppress(OSError), socket.create_connection((HOST, p.port), 1.0) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server on {p.port} did not answer PING in {timeout:g} s")


def start_optd(
    name: str, redis_url: str | None, extra_env: Mapping[str, str] | None = None
) -> Proc:
    """`optd serve` (one process) on a free port; `extra_env` adds OPTD_* settings such as
    OPTD_REDIS_CLUSTER=1 (bench.cluster). Session owners are off unless `extra_env` sets
    OPTD_OWNERS: the benchmarks that spread a session over two processes measure that
    (clients here do not follow redirects); bench/peers/owners.py turns them on."""
    port = free_port()
    env = base_env()
    env["OPTD_OWNERS"] = "off"
    if redis_url is not None:
        env["OPTD_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    argv = [sys.executable, "-m", "app.cli", "serve", "--host", HOST, "--port", str(port)]
    return Proc(name, [*argv, "--log-level", "warning"], env, port)


def start_module(name: str, module: str, *args: str) -> Proc:
    """`python -m <module> --port P *args` on a free port. Proc's cwd is the repository root
    and PYTHONPATH starts with it, so `bench` imports from this checkout without being
    installed (a fresh clone) and even under PYTHONSAFEPATH."""
    port = free_port()
    env = base_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return Proc(name, [sys.executable, "-m", module, "--port", str(port), *args], env, port)


def start_floor(name: str, redis_url: str | None) -> Proc:
    """The echo floor (no `redis_url`) or the echo + Redis floor of bench.common.floors."""
    extra = [] if redis_url is None else ["--redis-url", redis_url]
    return start_module(name, "bench.common.floors", *extra)


def wait_http(p: Proc, path: str = "/healthz", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p.check_alive()
        try:
            status, _, _ = Http(p.port, timeout=2.0).request("GET", path)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{p.name} did not answer {path} in {timeout:g} s:\n{p.tail()}")


class Http:
    """One keep-alive connection (stdlib http.client: far less client CPU per MB than
    httpx, DESIGN.md §5). Bodies are bytes built once; responses are read whole."""

    IDLE_S = 2.0  # uvicorn drops keep-alive connections idle for 5 s (its default)

    def __init__(self, port: int, timeout: float = 300.0) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.used = 0.0

    def fresh(self) -> None:
        """Reconnect (call outside any timed region) if the server may have dropped us:
        a POST must never be resent after a failure, so stale sockets are replaced first."""
        if time.monotonic() - self.used > self.IDLE_S:
            self.conn.close()
            self.conn.connect()
            self.used = time.monotonic()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = self.conn.getresponse()
        data = resp.read()
        self.used = time.monotonic()
        return resp.status, resp.headers, data

    def close(self) -> None:
        self.conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; nan elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rpartition(")")[2].split()  # fields from the 3rd on; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (Linux /proc/stat; nan elsewhere)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Interference:
    """How much CPU processes other than ours took while we measured: other engineers'
    tests on a shared 2-core machine skew every cell, so the report says how much."""

    def __init__(self) -> None:
        self.t0, self.busy0 = time.monotonic(), machine_busy_seconds()
        self.ours0 = self._ours()

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + sum(cpu_seconds(p.proc.pid) for p in _LIVE)

    def other_cores(self) -> float:
        """Mean cores used by others since start (call while our processes still run)."""
        wall = time.monotonic() - self.t0
        others = (machine_busy_seconds() - self.busy0) - (self._ours() - self.ours0)
        return max(others, 0.0) / wall if wall > 0 else float("nan")


def code_state() -> str:
    """The commit measured, and whether the server's code had uncommitted changes (other
    engineers edit the tree while benchmarks run)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT, capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "diff", "HEAD", "--", "app"],
            cwd=ROOT, capture_output=True, timeout=10, check=False,
        ).stdout  # fmt: skip
    except OSError:
        return "unknown"
    if not dirty:
        return head or "unknown"
    digest = hashlib.sha256(dirty).hexdigest()[:10]
    return f"{head or 'unknown'} + uncommitted changes in app/ (sha256 of the diff {digest})"


def redis_version() -> str:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return "unknown"
    m = re.search(r"v=(\S+)", out)
    return m.group(1) if m else out.strip() or "unknown"
