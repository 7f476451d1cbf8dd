"""Session owners (DESIGN §4 "Session owners"): the lease in the store, 307 to the owner,
proxy mode, the SDK's owner cache, takeover after the owner dies, OPTD_OWNERS=off.

Processes come from tests/procs.py with OPTD_OWNERS set here (procs' default is off)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from optd_client import Client

from app.core.config import Settings
from app.engine.owners import Owners, default_url, mode_for
from app.optim.local import LocalOptimizer
from app.store import keys
from app.store.base import SessionStore
from app.store.memory import MemoryStore
from tests.helpers import run
from tests.procs import start, stop
from tests.redis_cluster import LocalCluster
from tests.redisproc import RedisProc
from tests.test_workers import create, run_threads

LEASE = "2"  # seconds: short, so the takeover test waits little


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def owner_env(backend: str, request: pytest.FixtureRequest, mode: str) -> dict[str, str]:
    env = {"OPTD_OWNERS": mode, "OPTD_OWNER_LEASE_S": LEASE}
    if backend == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return env | {"OPTD_REDIS_URL": cluster.url, "OPTD_REDIS_CLUSTER": "1"}
    proc: RedisProc = request.getfixturevalue("redis_proc")
    return env | {"OPTD_REDIS_URL": proc.url}


@pytest.fixture(scope="module", params=["redis", "cluster"])
def pair(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two API processes with owners on (redirect), on one Redis or the local cluster."""
    env = owner_env(request.param, request, "redirect")
    procs = [start(env) for _ in range(2)]
    try:
        yield [url for _, url in procs]
    finally:
        for proc, _ in procs:
            stop(proc)


# --- the lease itself (store and engine) ---


def test_lease_one_holder_among_racers(make_store: Callable[..., SessionStore]) -> None:
    a = make_store()
    b = a if isinstance(a, MemoryStore) else make_store()  # two clients of one store
    sid = "owned-session-1"
    assert run(a.owner_claim(sid, "http://p0 0", 2000)) == ("", 0)  # no session, no owner
    run(a.create(sid, b"{}", {"param": np.zeros(2, dtype=np.float32)}, {}))

    async def race() -> list[tuple[str, int]]:
        claims = [s.owner_claim(sid, f"http://p{i} {i}", 2000) for i in range(8) for s in (a, b)]
        return await asyncio.gather(*claims)

    results = run(race())
    holders = {holder for holder, _ in results}
    assert len(holders) == 1  # every racer saw the same single winner
    winner = holders.pop()
    assert run(b.owner_claim(sid, winner, 2000)) == (winner, 2000)  # the holder renews
    assert run(a.owner_claim(sid, "http://other x", 2000))[0] == winner
    run(a.owner_release(sid, "http://other x"))  # not ours: nothing happens
    assert run(a.owner_claim(sid, "http://other x", 2000))[0] == winner
    run(a.owner_release(sid, winner))
    assert run(a.owner_claim(sid, "http://other x", 2000)) == ("http://other x", 2000)
    assert run(a.delete(sid))  # the lease goes with the session
    assert run(b.owner_claim(sid, "http://p1 1", 2000)) == ("", 0)


def test_modes_and_urls() -> None:
    assert mode_for(Settings(), "memory") == "off"
    assert mode_for(Settings(), "redis") == "redirect"
    assert mode_for(Settings(owners="proxy"), "memory") == "proxy"
    assert default_url(Settings()) is None  # learnt from the first request
    assert default_url(Settings(port=9001)) == "http://127.0.0.1:9001"
    assert default_url(Settings(host="0.0.0.0", port=9001)) is None
    assert default_url(Settings(advertise_url="http://api-1:80/")) == "http://api-1:80"


def test_memory_store_owns_everything() -> None:
    store = MemoryStore()
    run(store.create("s1", b"{}", {"param": np.zeros(2, dtype=np.float32)}, {}))
    owners = Owners(store, Settings(owners="redirect", port=9001))
    assert owners.enabled
    assert run(owners.owner("s1")) is None and run(owners.owner("s1")) is None
    assert owners.claims == 1
    run(owners.close())


# --- two processes ---


def test_second_process_redirects_to_the_owner(pair: list[str]) -> None:
    a, b = pair
    sid = create(a, {"x": [0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})
    assert httpx.get(f"{a}/v1/sessions/{sid}").status_code == 200  # a takes the lease
    path = f"/v1/sessions/{sid}/step?return=updated"
    r = httpx.post(b + path, json={"grads": {"x": [1.0]}})
    assert r.status_code == 307
    assert r.headers["location"] == a + path and r.headers["optd-owner"] == a
    r = httpx.get(f"{b}/v1/sessions/{sid}/params?names=x")
    assert r.status_code == 307 and r.headers["location"] == f"{a}/v1/sessions/{sid}/params?names=x"
    # a browser (the dashboard) cannot follow a 307 to another origin: forwarded instead
    r = httpx.get(f"{b}/v1/sessions/{sid}/history", headers={"Sec-Fetch-Mode": "cors"})
    assert r.status_code == 200 and r.headers["optd-owner"] == a and r.json()["id"] == sid
    # the owner serves; sessions nobody asked about and the list are not redirected
    assert httpx.post(a + path, json={"grads": {"x": [1.0]}}).json()["version"] == 1
    assert httpx.get(f"{b}/v1/sessions").status_code == 200


def test_plain_httpx_following_redirects(pair: list[str]) -> None:
    a, b = pair
    sid = create(a, {"x": [0.0, 0.0]}, optimizer="sgd", hyperparams={"lr": 0.5})
    with httpx.Client(follow_redirects=True, timeout=10) as http:
        for i, url in enumerate([a, b, b, a, b]):
            r = http.post(f"{url}/v1/sessions/{sid}/step", json={"grads": {"x": [1.0, 2.0]}})
            assert r.status_code == 200 and r.json()["version"] == i + 1
        assert r.json()["params"]["x"]["data"] == [-2.5, -5.0]


def test_sdk_caches_the_owner(pair: list[str]) -> None:
    a, b = pair
    sid = create(a, {"x": [0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})
    httpx.get(f"{a}/v1/sessions/{sid}")  # a owns it
    before = {u: metric(u, "optd_steps_total") for u in pair}
    redirects = metric(b, "optd_owner_redirects_total")
    with Client(b) as client:
        session = client.session(sid)
        for _ in range(10):
            session.step({"x": np.ones(1, np.float32)})
        assert session.params()["x"].tolist() == [-10.0]
    assert metric(a, "optd_steps_total") - before[a] == 10
    assert metric(b, "optd_steps_total") == before[b]
    assert metric(b, "optd_owner_redirects_total") - redirects == 1  # then straight to a


def test_racing_processes_agree_on_one_owner(pair: list[str]) -> None:
    sids = [create(pair[0], {"x": [0.0]}, optimizer="sgd") for _ in range(6)]
    answers: list[tuple[str, str, int, str | None]] = []
    go = threading.Barrier(4)

    def ask(i: int) -> None:
        url = pair[i % 2]
        with httpx.Client(timeout=10) as http:
            go.wait()
            for sid in sids:
                r = http.get(f"{url}/v1/sessions/{sid}")
                answers.append((sid, url, r.status_code, r.headers.get("optd-owner")))

    run_threads(4, ask)
    for sid in sids:
        mine = [x for x in answers if x[0] == sid]
        served = {url for _, url, status, _ in mine if status == 200}
        pointed = {owner for _, _, status, owner in mine if status == 307}
        assert {status for _, _, status, _ in mine} <= {200, 307}
        assert len(served) == 1 and pointed <= served  # exactly one owner, named by all


def test_owner_killed_another_takes_over(request: pytest.FixtureRequest) -> None:
    """SIGKILL the owner under load from SDK clients sent to the other process: they fail
    over at once (Optd-Owner-Unreachable), the survivor takes the lease once it runs out,
    no acknowledged step is lost and none is applied twice (Adam, constant gradient: the
    state after V steps is V local steps whatever their order)."""
    env = owner_env("redis", request, "redirect")
    (victim, a), (survivor, b) = start(env), start(env)
    n = 20_000
    try:
        sid = create(a, {"w": {"shape": [n], "dtype": "float32", "data": [0.5] * n}},
                     optimizer="adam", hyperparams={"lr": 0.01})  # fmt: skip
        httpx.get(f"{a}/v1/sessions/{sid}")  # a owns it
        g = np.full(n, 0.25, dtype=np.float32)
        acked: list[int] = []
        failed: list[BaseException] = []
        lock = threading.Lock()
        killed = threading.Event()

        def worker(i: int) -> None:
            with Client(b, retries=8) as client:
                session = client.session(sid)
                for k in range(40):
                    if i == 0 and k == 10:
                        victim.kill()
                        killed.set()
                    try:
                        session.step({"w": g})
                    except Exception as exc:  # noqa: BLE001 - counted: may or may not land
                        with lock:
                            failed.append(exc)
                        continue
                    last = session.last
                    assert last is not None
                    with lock:  # a replay's version is today's, not the replayed step's
                        acked.append(-1 if last.replayed else last.version)

        run_threads(3, worker)
        assert killed.is_set()
        r: Any = redis.Redis.from_url(env["OPTD_REDIS_URL"])
        holder = b""
        until = time.monotonic() + 30
        while time.monotonic() < until:
            httpx.get(f"{b}/v1/sessions/{sid}")  # asks b to (re)claim once the lease is free
            holder = r.get(keys.owner_key(sid)) or b""
            if holder.startswith(b.encode() + b" "):
                break
            time.sleep(0.2)
        assert holder.startswith(b.encode() + b" "), holder
        state = httpx.get(f"{b}/v1/sessions/{sid}/state", timeout=30).json()
    finally:
        stop(victim)
        stop(survivor)
    version = state["version"]
    fresh = [v for v in acked if v >= 0]
    assert len(set(fresh)) == len(fresh) and len(acked) + len(failed) == 120
    assert len(acked) <= version <= len(acked) + len(failed)  # nothing lost, nothing doubled
    ref = LocalOptimizer("adam", {"w": np.full(n, 0.5, dtype=np.float32)}, {"lr": 0.01})
    for _ in range(version):
        ref.step({"w": g})
    got = np.asarray(state["tensors"]["param/w"]["data"], dtype=np.float32)
    np.testing.assert_array_equal(got, ref.params["w"])


def test_proxy_mode_answers_for_the_owner(request: pytest.FixtureRequest) -> None:
    env = {**owner_env("redis", request, "proxy"), "OPTD_MAX_BODY_MB": "0.01"}
    (pa, a), (pb, b) = start(env), start(env)
    try:
        sid = create(a, {"x": [0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})
        httpx.get(f"{a}/v1/sessions/{sid}")
        r = httpx.post(f"{b}/v1/sessions/{sid}/step", json={"grads": {"x": [2.0]}})
        assert r.status_code == 200 and r.headers["optd-owner"] == a
        assert r.json()["params"]["x"]["data"] == [-2.0] and r.headers["etag"] == '"1"'
        assert metric(a, "optd_steps_total") == 1 and metric(b, "optd_steps_total") == 0
        assert metric(b, "optd_owner_proxied_total") == 1
        r = httpx.get(f"{b}/v1/sessions/{sid}/nope")  # the owner's own 404, passed on
        assert r.status_code == 404 and r.headers["optd-owner"] == a
        # the forwarding process reads the body under the same limits as any route
        big = {"grads": {"x": [1.0] * 5000}}  # ~20 KB > OPTD_MAX_BODY_MB (10 KiB)
        r = httpx.post(f"{b}/v1/sessions/{sid}/step", json=big)
        assert r.status_code == 413 and r.json()["type"].endswith("too-large"), r.text
        assert "optd-owner" not in r.headers and metric(b, "optd_owner_proxied_total") == 3
    finally:
        stop(pa)
        stop(pb)


def test_owners_off_is_todays_behaviour(request: pytest.FixtureRequest) -> None:
    env = owner_env("redis", request, "off")
    (pa, a), (pb, b) = start(env), start(env)
    try:
        sid = create(a, {"x": [0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})
        for i, url in enumerate([a, b, a, b]):
            r = httpx.post(f"{url}/v1/sessions/{sid}/step", json={"grads": {"x": [1.0]}})
            assert r.status_code == 200 and r.json()["version"] == i + 1
            assert "optd-owner" not in r.headers
        assert metric(a, "optd_steps_total") == 2 and metric(b, "optd_steps_total") == 2
    finally:
        stop(pa)
        stop(pb)
