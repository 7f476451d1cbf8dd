"""A private `redis-server` per test run, so tests can kill and restart it at will.

Never the system Redis on 6379: tests must not touch anyone's data, and a fault test
needs a server it owns. `cluster=True` starts a one-node Redis Cluster that serves all
16384 slots, which is enough to exercise the cluster client, hash tags and the
same-slot rules of scripts and multi-key commands.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(cluster: bool = False) -> int:
    """A free TCP port; for a cluster node also its bus port (+10000), so at most 55535."""
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = random.randint(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not on PATH; the Redis tests need it and are never skipped. "
            "Install it with `apt-get install -y redis-server` (or `brew install redis`)."
        )
    return path


class _PortTaken(Exception):
    pass


class RedisProc:
    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        dir: str | Path | None = None,
        cluster: bool = False,
        node_timeout_ms: int = 1000,
        serve_all_slots: bool = True,
    ) -> None:
        self._own_port = port is None  # a port we chose may be taken before Redis binds it
        self.port = port or free_port(cluster)
        self.node_timeout_ms = node_timeout_ms
        self.serve_all_slots = serve_all_slots  # False: a node of a multi-node cluster
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.cluster = cluster
        self._own_dir = dir is None
        self.dir = Path(dir) if dir is not None else Path(tempfile.mkdtemp(prefix="optd-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
            ]  # fmt: skip
        return args

    def cli(self, *args: str) -> str:
        """Run `redis-cli` against this server (for set-up steps, not for tests' assertions)."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            timeout=5,
            check=True,
        )
        return out.stdout.decode()

    def start(self, timeout: float = 5.0) -> RedisProc:
        if self.proc is not None and self.proc.poll() is None:
            return self
        for attempt in range(5):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                # free_port() only proves the port was free a moment ago: another process
                # (an outgoing connection's ephemeral port, often) can bind it before Redis
                # does. A port we chose ourselves is replaced; a caller's port is not.
                if not self._own_port or attempt == 4:
                    raise RuntimeError(
                        f"port {self.port} is in use; see {self.dir / 'redis.log'}"
                    ) from None
                self.port = free_port(self.cluster)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> RedisProc:
        log_path = self.dir / "redis.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        self._log = open(log_path, "ab")  # closed in _reap()
        self.proc = subprocess.Popen(self._args(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._reap(sig_kill=True)
                with open(log_path, "rb") as f:
                    f.seek(offset)
                    if b"Address already in use" in f.read():
                        raise _PortTaken
                raise RuntimeError(f"redis-server exited; see {log_path}")
            if self._ping():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING within {timeout} s")
            time.sleep(0.02)
        self._own_port = False  # a restart must come back on the same port
        if self.cluster and self.serve_all_slots:
            self._serve_all_slots(deadline)
        return self

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _serve_all_slots(self, deadline: float) -> None:
        if "cluster_state:ok" not in self.cli("CLUSTER", "INFO"):
            with contextlib.suppress(subprocess.CalledProcessError):
                self.cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        while "cluster_state:ok" not in self.cli("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError("one-node cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _reap(self, sig_kill: bool) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                (self.proc.kill if sig_kill else self.proc.terminate)()
            self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """SIGTERM: Redis flushes the AOF and exits cleanly."""
        self._reap(sig_kill=False)

    def kill(self) -> None:
        """SIGKILL: a crash; whatever the AOF had not synced is lost."""
        self._reap(sig_kill=True)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> RedisProc:
        """Same port and directory, so an AOF (or the cluster's nodes.conf) is reloaded."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProc:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
