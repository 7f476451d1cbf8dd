"""optd on a real Redis Cluster (3 masters, 3 replicas): sessions spread over the shards,
a master killed under load loses no acknowledged step, slots move under load."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import redis

from app.optim.local import LocalOptimizer
from tests.procs import start, stop
from tests.redis_cluster import LocalCluster
from tests.test_workers import create, run_threads


def apis(cluster: LocalCluster, n: int = 2, **env: str) -> list[tuple[object, str]]:
    return [
        start({"OPTD_REDIS_URL": cluster.url, "OPTD_REDIS_CLUSTER": "1", **env}) for _ in range(n)
    ]


def test_sessions_spread_over_all_masters(redis_cluster: LocalCluster) -> None:
    redis_cluster.flushall()
    procs = apis(redis_cluster)
    try:
        urls = [u for _, u in procs]
        sids = [create(urls[i % 2], {"x": [0.0]}) for i in range(60)]
        owners = {redis_cluster.master_for(f"optd:{{{sid}}}:meta").port for sid in sids}
        assert owners == {m.port for m in redis_cluster.masters()}
        seen, cursor = [], None
        while True:
            q = "?limit=7" + (f"&cursor={cursor}" if cursor else "")
            page = httpx.get(urls[1] + "/v1/sessions" + q).json()
            seen += [s["id"] for s in page["sessions"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert sorted(seen) == sorted(sids)
    finally:
        for p, _ in procs:
            stop(p)  # type: ignore[arg-type]


def keyed_steps(
    urls: list[str],
    sids: list[str],
    seconds: float,
    acked: dict[str, list[int]],
    errors: list[tuple[int, str]],
) -> None:
    """4 workers stepping round-robin with retries on the same Idempotency-Key: 503s and
    connection errors are allowed while a shard has no master, anything else fails."""
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=30) as http:
            k = 0
            while time.monotonic() < stop_at:
                sid = sids[(i + k) % len(sids)]
                key = str(uuid.uuid4())
                give_up = time.monotonic() + 90  # a crashed request's key is freed in 30 s
                attempt = 0
                while time.monotonic() < give_up:
                    attempt += 1
                    url = urls[(i + attempt) % len(urls)]
                    try:
                        r = http.post(
                            f"{url}/v1/sessions/{sid}/step",
                            json={"grads": {"x": [1.0, 1.0]}},
                            headers={"Idempotency-Key": key, "Prefer": "return=minimal"},
                        )
                    except httpx.TransportError:
                        time.sleep(0.05)
                        continue
                    if r.status_code == 204:
                        with lock:
                            acked[sid].append(
                                int(
                                    r.headers.get(
                                        "Optd-Replayed-Version", r.headers["Optd-Version"]
                                    )
                                )
                            )
                        break
                    assert r.status_code in (503, 409), (r.status_code, r.text)
                    if r.status_code == 409:
                        assert r.json().get("in_flight"), r.text
                    with lock:
                        errors.append((r.status_code, r.text[:300]))
                    time.sleep(0.05)
                else:
                    raise AssertionError("a step never went through")
                k += 1

    run_threads(4, worker)


def check_sessions(url: str, sids: list[str], acked: dict[str, list[int]]) -> None:
    """Every acknowledged step is there, and params, slots and version agree."""
    for sid in sids:
        state = httpx.get(f"{url}/v1/sessions/{sid}/state", timeout=30).json()
        version = state["version"]
        assert len(set(acked[sid])) == len(acked[sid])
        assert not acked[sid] or max(acked[sid]) <= version
        assert len(acked[sid]) <= version == state["meta"]["step"]
        ref = LocalOptimizer(
            "sgd", {"x": np.zeros(2)}, {"lr": 1.0, "momentum": 0.9}, dtype="float64"
        )
        for _ in range(version):
            ref.step({"x": np.ones(2)})
        assert state["tensors"]["param/x"]["data"] == ref.params["x"].tolist()
        assert (
            state["tensors"]["momentum_buffer/x"]["data"]
            == ref.slot("momentum_buffer", "x").tolist()
        )


@pytest.fixture
def fresh_cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        yield cluster


def test_failover_under_load_with_wait_replicas(fresh_cluster: LocalCluster) -> None:
    procs = apis(fresh_cluster, OPTD_REDIS_WAIT_REPLICAS="1")
    urls = [u for _, u in procs]
    cfg = {"optimizer": "sgd", "hyperparams": {"lr": 1.0, "momentum": 0.9}, "dtype": "float64"}
    sids = [create(urls[0], {"x": [0.0, 0.0]}, **cfg) for _ in range(12)]
    victim = fresh_cluster.master_for(f"optd:{{{sids[0]}}}:meta")
    acked: dict[str, list[int]] = {s: [] for s in sids}
    errors: list[tuple[int, str]] = []

    def fail_over() -> None:
        """kill -9 a master; once its replica took over, a fresh node on its port joins as
        the new master's replica, so WAIT 1 can be satisfied on that shard again."""
        time.sleep(1.0)
        old = {m.port for m in fresh_cluster.masters()}
        victim.kill()
        deadline = time.monotonic() + 60
        while True:  # the victim is out and its replica serves the slots
            now = {m.port for m in fresh_cluster.masters()}
            if victim.port not in now and len(now) == len(old):
                break
            assert time.monotonic() < deadline, "no failover within 60 s"
            time.sleep(0.1)
        promoted = next(n for n in fresh_cluster.nodes if n.port in now - old)
        fresh_cluster.wait_ok(timeout=60)  # every node has the new config before add-node
        fresh_cluster.rejoin_as_replica(victim, promoted)

    killer = threading.Thread(target=fail_over)
    killer.start()
    try:
        keyed_steps(urls, sids, 10.0, acked, errors)
        killer.join()
        fresh_cluster.wait_ok()
        check_sessions(urls[0], sids, acked)
        assert victim.port not in {m.port for m in fresh_cluster.masters()}  # replica promoted
        assert sum(len(a) for a in acked.values()) > 50
    finally:
        for p, _ in procs:
            stop(p)  # type: ignore[arg-type]


def test_resharding_under_load(fresh_cluster: LocalCluster) -> None:
    procs = apis(fresh_cluster)
    urls = [u for _, u in procs]
    cfg = {"optimizer": "sgd", "hyperparams": {"lr": 1.0, "momentum": 0.9}, "dtype": "float64"}
    sids = [create(urls[0], {"x": [0.0, 0.0]}, **cfg) for _ in range(6)]
    acked: dict[str, list[int]] = {s: [] for s in sids}
    errors: list[tuple[int, str]] = []

    def reshard() -> None:
        time.sleep(0.5)
        masters = fresh_cluster.masters()
        with redis.RedisCluster.from_url(fresh_cluster.url) as rc:
            for i, sid in enumerate(sids):
                slot = rc.keyslot(f"optd:{{{sid}}}:meta")
                owner = fresh_cluster.master_for(f"optd:{{{sid}}}:meta")
                dst = next(m for m in masters[i % 3 :] + masters if m.port != owner.port)
                fresh_cluster.move_slot(slot, dst)

    mover = threading.Thread(target=reshard)
    mover.start()
    try:
        keyed_steps(urls, sids, 5.0, acked, errors)
        mover.join()
        assert not errors, f"clients saw {errors} during the resharding"
        check_sessions(urls[1], sids, acked)
    finally:
        for p, _ in procs:
            out = stop(p)  # type: ignore[arg-type]
            if "Traceback" in out:
                print("SERVER LOG", out)
