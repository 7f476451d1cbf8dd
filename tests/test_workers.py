"""Many workers, one optimizer: real API processes on one private Redis (DESIGN §4)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from app.optim.local import LocalOptimizer
from tests.procs import start, stop
from tests.redisproc import RedisProc

ST = "application/x-safetensors"


@pytest.fixture(scope="module")
def two_apis() -> Iterator[list[str]]:
    """Two `optd serve` processes sharing one Redis."""
    with RedisProc() as redis:
        procs = [start({"OPTD_REDIS_URL": redis.url}) for _ in range(2)]
        try:
            yield [url for _, url in procs]
        finally:
            for proc, _ in procs:
                stop(proc)


def create(url: str, params: dict[str, Any], **config: Any) -> str:
    r = httpx.post(url + "/v1/sessions", json={"params": params, **config}, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def run_threads(n: int, target: Any) -> None:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]


def test_async_sgd_8_workers_2_processes(two_apis: list[str]) -> None:
    sid = create(two_apis[0], {"x": [0.0, 0.0, 0.0, 0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})

    def worker(i: int) -> None:
        with httpx.Client(timeout=30) as http:
            for k in range(50):
                url = two_apis[(i + k) % 2]
                r = http.post(
                    f"{url}/v1/sessions/{sid}/step",
                    json={"grads": {"x": [1.0, 1.0, 1.0, 1.0]}, "worker": f"w{i}"},
                )
                assert r.status_code == 200, r.text

    run_threads(8, worker)
    r = httpx.get(f"{two_apis[1]}/v1/sessions/{sid}/params").json()
    assert r["version"] == 400
    assert r["params"]["x"]["data"] == [-400.0] * 4


def test_async_adam_equals_replay_of_accepted_order(two_apis: list[str]) -> None:
    p0 = {"w": np.linspace(-1, 1, 6).reshape(2, 3), "b": np.zeros(3)}
    sid = create(
        two_apis[0],
        {
            k: {"shape": list(v.shape), "dtype": "float64", "data": v.ravel().tolist()}
            for k, v in p0.items()
        },
        optimizer="adam",
        dtype="float64",
        hyperparams={"lr": 0.01},
    )
    accepted: dict[int, dict[str, np.ndarray]] = {}
    lock = threading.Lock()

    def worker(i: int) -> None:
        rng = np.random.default_rng(i)
        with httpx.Client(timeout=30) as http:
            for k in range(25):
                g = {n: rng.standard_normal(v.shape) for n, v in p0.items()}
                body = {"grads": {n: a.tolist() for n, a in g.items()}}
                r = http.post(f"{two_apis[k % 2]}/v1/sessions/{sid}/step?return=updated", json=body)
                assert r.status_code == 200, r.text
                with lock:
                    v = r.json()["version"]
                    assert v not in accepted, "two steps acknowledged with one version"
                    accepted[v] = g

    run_threads(8, worker)
    assert sorted(accepted) == list(range(1, 201))  # none lost, none doubled
    ref = LocalOptimizer("adam", p0, {"lr": 0.01}, dtype="float64")
    for v in sorted(accepted):
        ref.step(accepted[v])
    got = httpx.get(f"{two_apis[0]}/v1/sessions/{sid}/state").json()["tensors"]
    for n, want in ref.params.items():
        np.testing.assert_array_equal(np.asarray(got[f"param/{n}"]["data"]), want.ravel())
        np.testing.assert_array_equal(
            np.asarray(got[f"exp_avg_sq/{n}"]["data"]), ref.slot("exp_avg_sq", n).ravel()
        )


def test_sync_4_workers_bit_identical_to_mean(two_apis: list[str]) -> None:
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(5).astype(np.float32).tolist()
    sync = create(
        two_apis[0], {"x": p0}, optimizer="adam", mode="sync", workers=4, hyperparams={"lr": 0.05}
    )
    solo = create(two_apis[1], {"x": p0}, optimizer="adam", hyperparams={"lr": 0.05})
    rounds = 20
    grads = rng.standard_normal((rounds, 4, 5)).astype(np.float32)
    results: dict[tuple[int, int], list[float]] = {}

    def worker(i: int) -> None:
        with httpx.Client(timeout=60) as http:
            for r in range(rounds):
                resp = http.post(
                    f"{two_apis[i % 2]}/v1/sessions/{sync}/step",
                    json={
                        "grads": {"x": grads[r, i].tolist()},
                        "worker": f"w{i}",
                        "base_version": r,
                    },
                )
                assert resp.status_code == 200, resp.text
                assert resp.json()["version"] == r + 1
                results[(r, i)] = resp.json()["params"]["x"]["data"]

    run_threads(4, worker)
    with httpx.Client(timeout=30) as http:
        for r in range(rounds):
            # the mean the server computes: float64 sum in worker-id order, / N
            mean = grads[r, 0].astype(np.float64)
            for i in range(1, 4):
                mean = mean + grads[r, i]
            mean = mean / 4
            resp = http.post(
                f"{two_apis[0]}/v1/sessions/{solo}/step", json={"grads": {"x": mean.tolist()}}
            )
            want = resp.json()["params"]["x"]["data"]
            for i in range(4):
                assert results[(r, i)] == want, (r, i)


def test_sync_timeout_replay_and_late(two_apis: list[str]) -> None:
    a, b = two_apis
    sid = create(a, {"x": [0.0]}, optimizer="sgd", mode="sync", workers=2, hyperparams={"lr": 1.0})
    step = f"/v1/sessions/{sid}/step"
    with httpx.Client(timeout=30) as http:
        r = http.post(a + step + "?wait=0.2", json={"grads": {"x": [1.0]}, "worker": "w0"})
        assert r.status_code == 202
        barrier = r.json()["barrier"]
        assert {k: barrier[k] for k in ("version", "have", "need")} == {
            "version": 0,
            "have": 1,
            "need": 2,
        }
        assert barrier["contributors"] == ["w0"] and barrier["closes_in_s"] is None
        # the same worker again is a replay, not a second vote
        r = http.post(b + step + "?wait=0.2", json={"grads": {"x": [5.0]}, "worker": "w0"})
        assert r.status_code == 202 and r.json()["barrier"]["have"] == 1
        r = http.post(b + step, json={"grads": {"x": [3.0]}, "worker": "w1", "base_version": 0})
        assert r.status_code == 200 and r.json()["params"]["x"]["data"] == [-2.0]
        # w0 picks its result up by long-polling, or by asking again
        p = http.get(f"{a}/v1/sessions/{sid}/params?min_version=1&wait=5").json()
        assert p["version"] == 1 and p["params"]["x"]["data"] == [-2.0]
        r = http.post(a + step, json={"grads": {"x": [1.0]}, "worker": "w0", "base_version": 0})
        assert r.status_code == 200 and r.json()["version"] == 1
        # a worker that missed the round is told so
        r = http.post(a + step, json={"grads": {"x": [1.0]}, "worker": "w9", "base_version": 0})
        assert r.status_code == 409 and r.json()["type"] == "urn:optd:problem:stale-gradient"
        assert r.json()["current_version"] == 1
        r = http.post(a + step, json={"grads": {"x": [1.0]}})
        assert r.status_code == 400 and "worker" in r.json()["detail"]
