"""A worker process holding a lease is killed with SIGKILL in the middle of a round: the
round closes once its lease runs out, with the workers that are left (DESIGN §4, elastic
rounds). Real processes: an `optd serve` on each store and a worker subprocess that
heartbeats (`PUT .../workers/{w}`) until it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
import redis

from tests.procs import start, stop
from tests.redis_cluster import LocalCluster
from tests.redisproc import RedisProc
from tests.test_workers import create

LEASE_S = 1.0
HEARTBEAT = """
import sys, time, httpx
with httpx.Client() as c:
    c.put(sys.argv[1]).raise_for_status()
    print("joined", flush=True)
    while True:
        time.sleep(0.1)
        c.put(sys.argv[1])
"""


@pytest.fixture(params=["memory", "redis", "cluster"])
def server_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "redis":
        proc: RedisProc = request.getfixturevalue("redis_proc")
        with redis.Redis.from_url(proc.url) as r:
            r.flushall()
        return {"OPTD_REDIS_URL": proc.url}
    if request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return {"OPTD_REDIS_URL": cluster.url, "OPTD_REDIS_CLUSTER": "1"}
    return {}


def test_a_killed_worker_is_dropped_when_its_lease_runs_out(server_env: dict[str, str]) -> None:
    server, url = start(server_env)
    victim: subprocess.Popen[str] | None = None
    try:
        sid = create(
            url, {"x": [0.0, 0.0]}, optimizer="sgd", hyperparams={"lr": 1.0}, dtype="float64",
            mode="sync", workers=2, min_workers=1, worker_lease_s=LEASE_S,
        )  # fmt: skip
        base = f"{url}/v1/sessions/{sid}"
        victim = subprocess.Popen(
            [sys.executable, "-c", HEARTBEAT, f"{base}/workers/victim"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert victim.stdout is not None and victim.stdout.readline().strip() == "joined"
        with httpx.Client(timeout=30) as c:
            assert c.put(f"{base}/workers/alive").status_code == 200
            body = {"grads": {"x": [1.0, 2.0]}, "worker": "alive", "base_version": 0}
            r = c.post(f"{base}/step?wait=0", json=body)
            assert r.status_code == 202 and r.json()["barrier"]["missing"] == ["victim"], r.text
            listing = c.get(f"{base}/workers").json()  # the live victim keeps the round open
            assert listing["round"]["version"] == 0 and listing["round"]["have"] == 1
            os.kill(victim.pid, signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            # the alive worker waits for its round as an SDK does: the same request again
            r = c.post(f"{base}/step?wait=20", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["version"] == 1 and r.json()["contributors"] == ["alive"]
            assert r.json()["params"]["x"]["data"] == [-1.0, -2.0]
            rows = {w["worker"]: w for w in c.get(f"{base}/workers").json()["workers"]}
            assert rows["victim"]["live"] is False and rows["victim"]["rounds"] == 0
            assert rows["alive"]["rounds"] == 1
    finally:
        if victim is not None and victim.poll() is None:
            victim.kill()
            victim.wait()
        if victim is not None and victim.stdout is not None:
            victim.stdout.close()
        stop(server)
