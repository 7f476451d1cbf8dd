"""A keyed step whose API process is killed with SIGKILL mid-request (issue #16 item 15):
its claim on the Idempotency-Key is a lease nobody renews any more, so a retry through
another process is acknowledged soon after, and the step is applied exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest
import redis

from app.store import keys
from tests.procs import start, stop
from tests.redis_cluster import LocalCluster
from tests.redisproc import RedisProc
from tests.test_workers import create

DEADLINE_S = 15.0  # generous: the lease is 2 s (the claim used to block retries for 30 s)


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> tuple[dict[str, str], Any]:
    if request.param == "redis":
        proc: RedisProc = request.getfixturevalue("redis_proc")
        client: Any = redis.Redis.from_url(proc.url)
        client.flushall()
        return {"OPTD_REDIS_URL": proc.url}, client
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    cluster.flushall()
    return {"OPTD_REDIS_URL": cluster.url, "OPTD_REDIS_CLUSTER": "1"}, cluster.client()


def test_retry_after_the_owner_is_killed_is_applied_once(
    backend: tuple[dict[str, str], Any],
) -> None:
    env, r = backend
    procs = [start(env) for _ in range(2)]
    (_, survivor), (victim, doomed) = procs
    try:
        sid = create(survivor, {"x": [0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})
        # Someone holds the session's advisory lock: the victim's step claims its key and
        # then waits for the lock, so it is in flight for sure when it is killed.
        r.set(keys.lock_key(sid), b"test", px=60_000)
        body, headers = {"grads": {"x": [1.0]}}, {"Idempotency-Key": "k1"}
        url = f"/v1/sessions/{sid}/step"

        def doomed_step() -> None:
            with pytest.raises(httpx.TransportError):
                httpx.post(doomed + url, json=body, headers=headers, timeout=60)

        t = threading.Thread(target=doomed_step)
        t.start()
        idem = keys.idem_key(sid, "k1")
        give_up = time.monotonic() + 20
        while not (r.get(idem) or b"").startswith(keys.INFLIGHT):
            assert time.monotonic() < give_up, "the step never claimed its key"
            time.sleep(0.02)
        time.sleep(3.0)  # longer than a lease: the live owner keeps renewing it
        busy = httpx.post(survivor + url, json=body, headers=headers)
        assert busy.status_code == 409 and busy.json()["in_flight"], busy.text
        os.kill(victim.pid, signal.SIGKILL)
        t.join(30)
        r.delete(keys.lock_key(sid))
        give_up = time.monotonic() + DEADLINE_S
        while True:
            got = httpx.post(survivor + url, json=body, headers=headers, timeout=30)
            if got.status_code == 200:
                break
            assert got.status_code == 409 and got.json()["in_flight"], got.text
            assert time.monotonic() < give_up, "the dead request's key was never freed"
            time.sleep(0.05)
        assert got.json()["version"] == 1 and got.json()["params"]["x"]["data"] == [-1.0]
        again = httpx.post(survivor + url, json=body, headers=headers)
        assert again.headers["Idempotent-Replayed"] == "true" and again.json()["version"] == 1
        info = httpx.get(f"{survivor}/v1/sessions/{sid}").json()
        assert info["version"] == 1 and info["step"] == 1  # applied exactly once
    finally:
        for p, _ in procs:
            stop(p)
        r.close()
