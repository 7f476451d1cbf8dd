"""A real local Redis Cluster for tests: 3 masters and 3 replicas on free ports.

Started with `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, as an
operator would; tests kill masters (failover) and move slots (resharding) on it.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import redis

from tests.redisproc import RedisProc


class LocalCluster:
    def __init__(self, masters: int = 3, appendonly: bool = False) -> None:
        self.nodes = [
            RedisProc(cluster=True, serve_all_slots=False, appendonly=appendonly)
            for _ in range(masters * 2)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node reports cluster_state:ok and the same view of the masters."""
        deadline = time.monotonic() + timeout
        while True:
            live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
            infos = [self._cli(n, "CLUSTER", "INFO") for n in live]
            repl = [self._cli(n, "INFO", "replication") for n in live]
            synced = all(
                "role:master" in r or "master_link_status:up" in r for r in repl
            )  # replicas finished their first sync: WAIT can count them
            if (
                synced
                and all("cluster_state:ok" in i for i in infos)
                and len({frozenset(self.masters_of(n)) for n in live}) == 1
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout} s: {infos}")
            time.sleep(0.1)

    @staticmethod
    def _cli(node: RedisProc, *args: str) -> str:
        try:
            return node.cli(*args)
        except subprocess.SubprocessError:
            return ""

    def masters_of(self, node: RedisProc) -> set[int]:
        """Ports of the masters (that serve slots) as `node` sees them."""
        ports = set()
        for line in self._cli(node, "CLUSTER", "NODES").splitlines():
            f = line.split()
            if len(f) > 8 and "master" in f[2] and "fail" not in f[2]:
                ports.add(int(f[1].split("@")[0].rsplit(":", 1)[1]))
        return ports

    def masters(self) -> list[RedisProc]:
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        ports = self.masters_of(live)
        return [n for n in self.nodes if n.port in ports]

    def master_for(self, key: str) -> RedisProc:
        with redis.RedisCluster.from_url(self.url) as rc:
            node = rc.get_node_from_key(key)
            return next(n for n in self.nodes if n.port == int(node.port))

    def node_id(self, node: RedisProc) -> str:
        return node.cli("CLUSTER", "MYID").strip()

    def move_slot(self, slot: int, dst: RedisProc) -> None:
        """What `redis-cli --cluster reshard` does, for one chosen slot: IMPORTING and
        MIGRATING, MIGRATE its keys in batches, then assign the slot to `dst` everywhere."""
        src = next(m for m in self.masters() if slot in self.slots_of(m))
        if src.port == dst.port:
            return
        src_id, dst_id = self.node_id(src), self.node_id(dst)
        dst.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        src.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        while True:
            keys = src.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "10").split()
            if not keys:
                break
            src.cli("MIGRATE", "127.0.0.1", str(dst.port), "", "0", "10000", "KEYS", *keys)
        for node in self.masters():
            node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)

    def rejoin_as_replica(self, node: RedisProc, master: RedisProc) -> None:
        """Replace a dead node by a fresh one on its port (no data, no cluster config) and
        add it as `master`'s replica — what an operator does after a failover."""
        (node.dir / "nodes.conf").unlink(missing_ok=True)
        node.start()
        # Right after a failover some nodes may not have the new config yet, and add-node
        # checks the whole cluster first: retry until every node agrees (seen under load).
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(
                ["redis-cli", "--cluster", "add-node", f"127.0.0.1:{node.port}",
                 f"127.0.0.1:{master.port}", "--cluster-slave", "--cluster-master-id",
                 self.node_id(master)],
                capture_output=True, timeout=60, text=True,
            )  # fmt: skip
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"add-node failed: {done.stdout[-500:]} {done.stderr[-500:]}")
            time.sleep(0.5)

    def slots_of(self, node: RedisProc) -> set[int]:
        me = self.node_id(node)
        slots: set[int] = set()
        for line in node.cli("CLUSTER", "NODES").splitlines():
            f = line.split()
            if f and f[0] == me:
                for r in f[8:]:
                    if r.startswith("["):
                        continue
                    lo, _, hi = r.partition("-")
                    slots.update(range(int(lo), int(hi or lo) + 1))
        return slots

    def flushall(self) -> None:
        for node in self.masters():
            with redis.Redis(port=node.port) as r:
                r.flushall()

    def client(self) -> Any:
        return redis.RedisCluster.from_url(self.url)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            node.cleanup()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()  # no node (or its open log file) outlives a failed start
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
