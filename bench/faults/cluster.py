"""A private Redis Cluster of 3 masters with 2 replicas each, for the failover scenario.

Two replicas a master, so that after one master is killed its shard still has a replica
once the other is promoted (Redis moves the remaining replica over to the new master),
and `OPTD_REDIS_WAIT_REPLICAS=1` can be met without an operator adding a node: what is
measured is optd's recovery, not an operator's. A short node timeout makes the failover
itself quick; it is reported separately from optd's part.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.cluster.redis_cluster import _cli, free_node_port
from bench.common import harness as h

MASTERS, REPLICAS = 3, 2


class Cluster:
    def __init__(self, node_timeout_ms: int) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[h.Proc] = []
        self.dirs: list[Path] = []

    @property
    def url(self) -> str:
        return f"redis://{h.HOST}:{self.nodes[0].port}/0"

    def start(self, timeout: float = 60.0) -> Cluster:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        taken: set[int] = set()
        for i in range(MASTERS * (1 + REPLICAS)):
            port = free_node_port(taken)
            taken |= {port, port + 10000}
            d = Path(tempfile.mkdtemp(prefix=f"optd-bench-faults{i}-"))
            self.dirs.append(d)
            argv = [
                binary, "--port", str(port), "--bind", h.HOST, "--dir", str(d),
                "--save", "", "--appendonly", "no", "--loglevel", "warning",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            self.nodes.append(h.Proc(f"faults-node{i}", argv, h.base_env(), port))
        for n in self.nodes:
            h.wait_redis(n)
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addrs = [f"{h.HOST}:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", str(REPLICAS),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_ok(timeout)
        return self

    def live(self) -> list[h.Proc]:
        return [n for n in self.nodes if n.proc.poll() is None]

    def masters(self) -> set[int]:
        """Ports of the masters serving slots, as a live node sees them."""
        ports = set()
        for line in _cli(self.live()[0].port, "CLUSTER", "NODES").splitlines():
            f = line.split()
            if len(f) > 8 and "master" in f[2] and "fail" not in f[2]:
                ports.add(int(f[1].split("@")[0].rsplit(":", 1)[1]))
        return ports

    def state_ok(self) -> bool:
        return all("cluster_state:ok" in _cli(n.port, "CLUSTER", "INFO") for n in self.live())

    def wait_ok(self, timeout: float) -> None:
        """Every live node says ok and every replica has finished its sync."""
        deadline = time.monotonic() + timeout
        while True:
            repl = [_cli(n.port, "INFO", "replication") for n in self.live()]
            synced = all("role:master" in r or "master_link_status:up" in r for r in repl)
            if synced and self.state_ok() and len(self.masters()) == MASTERS:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.nodes, self.dirs = [], []
