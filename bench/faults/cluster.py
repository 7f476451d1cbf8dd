"""A private Redis Cluster of 3 masters with 2 replicas each, for the failover scenario.

Two replicas a master, so that after one master is killed its shard still has a replica
once the other is promoted (Redis moves the remaining replica over to the new master),
and `OPTD_REDIS_WAIT_REPLICAS=1` can be met without an operator adding a node: what is
measured is optd's recovery, not an operator's. A short node timeout makes the failover
itself quick; it is reported separately from optd's part. Started as bench/cluster's
cluster; this adds what the failover needs: which nodes live, which are masters, and a
readiness check that tolerates a dead node.
"""

from __future__ import annotations

import time

from bench.cluster import redis_cluster
from bench.cluster.redis_cluster import _cli
from bench.common import harness as h

MASTERS, REPLICAS = 3, 2


class Cluster(redis_cluster.Cluster):
    def __init__(self, node_timeout_ms: int) -> None:
        super().__init__(MASTERS, REPLICAS, node_timeout_ms)

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
        """Every live node says ok and every replica has finished its sync (a killed node
        is not waited for)."""
        deadline = time.monotonic() + timeout
        while True:
            repl = [_cli(n.port, "INFO", "replication") for n in self.live()]
            synced = all("role:master" in r or "master_link_status:up" in r for r in repl)
            if synced and self.state_ok() and len(self.masters()) == MASTERS:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout:g} s")
            time.sleep(0.1)
