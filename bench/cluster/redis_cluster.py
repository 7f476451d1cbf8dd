"""A private Redis Cluster (by default 3 masters, 3 replicas) for bench/cluster/run.py and
bench/faults.

Benchmarks do not import from tests/, so this is the least start-up an operator would do:
six `redis-server --cluster-enabled yes` on free loopback ports (each with its cluster bus
port, +10000, free too), `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`,
then wait until every node says `cluster_state:ok` and every replica's
`master_link_status:up` (so WAIT can count it). Every node is a `harness.Proc`, so the
harness stops it on any exit; the nodes' directories are removed by `stop()`.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import harness as h

NODE_TIMEOUT_MS = 15_000  # a loaded 2-core machine must not look like a failed master


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((h.HOST, port))
        except OSError:
            return False
        return True


def free_node_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(500):
        port = random.randint(20000, 55535)
        if port not in taken and port + 10000 not in taken:
            if _bindable(port) and _bindable(port + 10000):
                return port
    raise RuntimeError("no free port pair for a cluster node")


def _cli(port: int, *args: str) -> str:
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    try:
        out = subprocess.run(
            [cli, "-h", h.HOST, "-p", str(port), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


class Cluster:
    """`masters` masters with `replicas` replicas each (bench.faults uses 2, so a shard
    keeps a replica after its master fails over)."""

    def __init__(
        self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = NODE_TIMEOUT_MS
    ) -> None:
        self.n_masters, self.replicas = masters, replicas
        self.size = masters * (1 + replicas)
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[h.Proc] = []
        self.dirs: list[Path] = []

    @property
    def url(self) -> str:
        return f"redis://{h.HOST}:{self.nodes[0].port}/0"

    @property
    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes]

    def start(self, timeout: float = 60.0) -> Cluster:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        taken: set[int] = set()
        for i in range(self.size):
            port = free_node_port(taken)
            taken |= {port, port + 10000}
            d = Path(tempfile.mkdtemp(prefix=f"optd-bench-cluster{i}-"))
            self.dirs.append(d)
            argv = [
                binary, "--port", str(port), "--bind", h.HOST, "--dir", str(d),
                "--save", "", "--appendonly", "no", "--loglevel", "warning",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
            ]  # fmt: skip
            self.nodes.append(h.Proc(f"redis-cluster{i}", argv, h.base_env(), port))
        for n in self.nodes:
            h.wait_redis(n)
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addrs = [f"{h.HOST}:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for n in self.nodes:
                n.check_alive()
            infos = [_cli(n.port, "CLUSTER", "INFO") for n in self.nodes]
            repl = [_cli(n.port, "INFO", "replication") for n in self.nodes]
            ok = all("cluster_state:ok" in i for i in infos)
            known = all(f"cluster_known_nodes:{self.size}" in i for i in infos)
            replicas = [r for r in repl if "role:slave" in r]
            n_replicas = self.size - self.n_masters
            synced = len(replicas) == n_replicas and all(
                "master_link_status:up" in r for r in replicas
            )
            views = [_cli(n.port, "CLUSTER", "NODES") for n in self.nodes]
            agreed = all(  # every node sees every master and replica (gossip has settled)
                v.count(" master ") + v.count(",master ") == self.n_masters
                and v.count(" slave ") + v.count(",slave ") == n_replicas
                for v in views
            )
            if ok and known and synced and agreed:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster not ready after {timeout:g} s (state ok {ok}, all known {known}, "
                    f"replicas synced {synced}, views agree {agreed})"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.nodes, self.dirs = [], []
