"""Elastic sync rounds (DESIGN §4): min_workers, round_timeout_s, worker_lease_s, the
membership endpoints, and a refused round that must not stick. Every test runs on the
embedded store, a private Redis and a Redis Cluster (the `client` fixture)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.fixtures_api import assert_problem, create, decode


def step(client: TestClient, sid: str, worker: str, g: list[float], **body: Any) -> Any:
    return client.post(
        f"/v1/sessions/{sid}/step?wait=0",
        json={"grads": {"x": g}, "worker": worker, **body},
    )


def sync_session(client: TestClient, **options: Any) -> str:
    return create(
        client,
        {"x": np.zeros(2)},
        optimizer="sgd",
        hyperparams={"lr": 1.0},
        dtype="float64",
        mode="sync",
        **options,
    )


def params(client: TestClient, sid: str) -> np.ndarray:
    r = client.get(f"/v1/sessions/{sid}/params")
    return decode(r.json()["params"])["x"]


def test_partial_round_is_the_exact_mean_of_its_contributors(client: TestClient) -> None:
    sid = sync_session(client, workers=3, min_workers=1, worker_lease_s=60)
    for w in ("a", "b", "c"):
        r = client.put(f"/v1/sessions/{sid}/workers/{w}")
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 0 and r.json()["lease_s"] == 60
    ga, gb = [0.1, 0.7], [0.2, 1e-9]
    r = step(client, sid, "b", gb)
    assert r.status_code == 202, r.text
    barrier = r.json()["barrier"]
    assert barrier["have"] == 1 and barrier["need"] == 3 and barrier["missing"] == ["a", "c"]
    assert step(client, sid, "a", ga).status_code == 202  # c is live and has not sent
    # c leaves: every live member has contributed, so the round closes with a and b
    assert client.delete(f"/v1/sessions/{sid}/workers/c").status_code == 204
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1
    mean = ((np.asarray(ga, np.float64) + np.asarray(gb, np.float64)) / 2).astype(np.float64)
    np.testing.assert_array_equal(params(client, sid), -mean)  # sgd, lr 1, from zeros
    # a's repeated request is answered from the closed round, naming who was in it
    r = step(client, sid, "a", ga, base_version=0)
    assert r.status_code == 200, r.text
    assert r.json()["contributors"] == ["a", "b"] and r.json()["missing"] == []
    listing = client.get(f"/v1/sessions/{sid}/workers").json()
    rows = {w["worker"]: w for w in listing["workers"]}
    assert set(rows) == {"a", "b"} and rows["a"]["rounds"] == 1 and rows["a"]["last_version"] == 0
    assert listing["round"]["version"] == 1 and listing["round"]["have"] == 0


def test_a_dead_workers_lease_runs_out_and_the_round_closes(client: TestClient) -> None:
    sid = sync_session(client, workers=2, min_workers=1, worker_lease_s=0.3)
    client.put(f"/v1/sessions/{sid}/workers/alive")
    client.put(f"/v1/sessions/{sid}/workers/dead")
    r = step(client, sid, "alive", [1.0, 2.0])
    assert r.status_code == 202 and r.json()["barrier"]["missing"] == ["dead"]
    time.sleep(0.6)  # "dead" is never heard from again
    listing = client.get(f"/v1/sessions/{sid}/workers").json()
    rows = {w["worker"]: w for w in listing["workers"]}
    assert rows["dead"]["live"] is False
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1
    np.testing.assert_array_equal(params(client, sid), [-1.0, -2.0])


def test_a_heartbeat_keeps_a_slow_worker_in_the_round(client: TestClient) -> None:
    sid = sync_session(client, workers=2, min_workers=1, worker_lease_s=0.5)
    client.put(f"/v1/sessions/{sid}/workers/fast")
    client.put(f"/v1/sessions/{sid}/workers/slow")
    assert step(client, sid, "fast", [1.0, 1.0]).status_code == 202
    for _ in range(4):
        time.sleep(0.2)
        r = client.put(f"/v1/sessions/{sid}/workers/slow")  # renews the lease
        assert r.json()["version"] == 0, "the round closed without the live worker"
    r = step(client, sid, "slow", [3.0, 3.0])
    assert r.status_code == 200 and r.json()["contributors"] == ["fast", "slow"]
    np.testing.assert_array_equal(params(client, sid), [-2.0, -2.0])


def test_the_timeout_needs_min_workers(client: TestClient) -> None:
    sid = sync_session(client, workers=3, min_workers=2, round_timeout_s=0.2)
    assert step(client, sid, "a", [1.0, 0.0]).status_code == 202
    time.sleep(0.4)
    listing = client.get(f"/v1/sessions/{sid}/workers").json()
    assert listing["round"]["have"] == 1 and listing["round"]["version"] == 0  # still open
    r = step(client, sid, "b", [3.0, 0.0])  # the 2nd contribution, after the timeout
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["contributors"] == ["a", "b"]
    np.testing.assert_array_equal(params(client, sid), [-2.0, 0.0])
    # a round with k contributions whose timeout has not run out shows its countdown
    assert step(client, sid, "a", [1.0, 0.0]).status_code == 202
    r = step(client, sid, "c", [1.0, 0.0])
    if r.status_code == 202:  # (on a slow machine the 0.2 s may already be over)
        assert 0 <= r.json()["barrier"]["closes_in_s"] <= 0.2


def test_without_the_new_fields_a_round_waits_for_all_workers(client: TestClient) -> None:
    sid = sync_session(client, workers=2)
    client.put(f"/v1/sessions/{sid}/workers/a")
    client.put(f"/v1/sessions/{sid}/workers/b")
    assert step(client, sid, "a", [1.0, 1.0]).status_code == 202
    assert client.delete(f"/v1/sessions/{sid}/workers/b").status_code == 204
    time.sleep(0.2)
    listing = client.get(f"/v1/sessions/{sid}/workers").json()
    assert listing["round"]["have"] == 1 and listing["round"]["need"] == 2
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 0
    r = step(client, sid, "b", [3.0, 3.0])
    assert r.status_code == 200 and r.json()["version"] == 1


def test_a_replayed_contribution_never_counts_twice(client: TestClient) -> None:
    sid = sync_session(client, workers=2, min_workers=2, round_timeout_s=60)
    headers = {"Idempotency-Key": "k1"}
    for _ in range(3):
        r = client.post(
            f"/v1/sessions/{sid}/step?wait=0",
            json={"grads": {"x": [1.0, 1.0]}, "worker": "a"},
            headers=headers,
        )
        assert r.status_code == 202 and r.json()["barrier"]["have"] == 1
    rows = client.get(f"/v1/sessions/{sid}/workers").json()["workers"]
    assert [(w["worker"], w["rounds"]) for w in rows] == [("a", 1)]


def test_elastic_fields_are_validated_and_patchable(client: TestClient) -> None:
    base: dict[str, Any] = {"params": {"x": [0.0]}, "optimizer": "sgd"}
    bad = [
        {"mode": "sync", "workers": 2, "min_workers": 3},
        {"mode": "sync", "workers": 2, "min_workers": 0},
        {"mode": "sync", "workers": 2, "round_timeout_s": 0},
        {"mode": "sync", "workers": 2, "worker_lease_s": -1},
        {"worker_lease_s": 5},  # async sessions have no rounds
    ]
    for extra in bad:
        assert_problem(client.post("/v1/sessions", json={**base, **extra}), 422, "invalid-config")
    sid = sync_session(client, workers=4)
    info = client.get(f"/v1/sessions/{sid}").json()
    assert info["min_workers"] is None and info["worker_lease_s"] is None
    r = client.patch(f"/v1/sessions/{sid}", json={"min_workers": 2, "worker_lease_s": 10})
    assert r.status_code == 200 and r.json()["min_workers"] == 2, r.text
    assert_problem(client.patch(f"/v1/sessions/{sid}", json={"min_workers": 5}), 422)
    async_sid = create(client, {"x": np.zeros(1)}, optimizer="sgd")
    assert_problem(client.put(f"/v1/sessions/{async_sid}/workers/a"), 422, "invalid-config")
    assert_problem(client.put("/v1/sessions/nope/workers/a"), 404, "not-found")


def test_a_refused_round_is_discarded_not_stuck(client: TestClient) -> None:
    sid = create(
        client,
        {"x": np.zeros(2, np.float32)},
        optimizer="sgd",
        hyperparams={"lr": 10.0},
        mode="sync",
        workers=2,
    )
    huge = [3e38, 3e38]  # finite, but lr * mean overflows float32
    assert step(client, sid, "a", huge).status_code == 202
    assert_problem(step(client, sid, "b", huge), 422, "invalid-tensor")
    # new gradients for the same version complete a fresh round
    assert step(client, sid, "c", [1.0, 2.0]).status_code == 202
    r = step(client, sid, "d", [3.0, 4.0])
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["contributors"] == ["c", "d"]
    np.testing.assert_array_equal(params(client, sid), np.asarray([-20.0, -30.0], np.float32))


def test_a_process_whose_view_is_behind_still_joins_the_right_round(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    """A contribution starts from this process's own view of the session (no store read);
    when another process closed rounds meanwhile, the store's add refuses the old round
    and the contribution goes to the current one, or is a replay, or is too late. On the
    embedded store both "processes" are one app (its view is never behind)."""
    a = make_client()
    b = a if settings.redis_url is None else make_client()
    sid = sync_session(a, workers=2)
    assert step(a, sid, "w1", [1.0, 0.0]).status_code == 202  # a's view: version 0
    r = step(b, sid, "w2", [3.0, 0.0])
    assert r.status_code == 200 and r.json()["version"] == 1  # closed in b
    # w1 again through a, no base version: a's view (0) is behind; the store says 1
    r = step(a, sid, "w1", [0.0, 2.0])
    assert r.status_code == 202 and r.json()["barrier"]["version"] == 1, r.text
    # w2 repeating its round-0 request through a: a replay of that round's answer
    r = step(a, sid, "w2", [3.0, 0.0], base_version=0)
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    # a worker that was not in round 0 is too late for it
    assert_problem(step(a, sid, "w3", [5.0, 5.0], base_version=0), 409, "stale-gradient")
    r = step(a, sid, "w2", [0.0, 4.0], base_version=1)
    assert r.status_code == 200 and r.json()["contributors"] == ["w1", "w2"], r.text
    np.testing.assert_array_equal(params(b, sid), [-2.0, -3.0])  # sgd lr 1: -(2) - (3)


def test_join_leave_rejoin(client: TestClient) -> None:
    sid = sync_session(client, workers=2, min_workers=1, worker_lease_s=60)
    for w in ("a", "b"):
        assert client.put(f"/v1/sessions/{sid}/workers/{w}").status_code == 200
    assert step(client, sid, "b", [1.0, 1.0]).status_code == 202
    assert step(client, sid, "a", [3.0, 3.0]).json()["contributors"] == ["a", "b"]
    r = step(client, sid, "a", [2.0, 2.0])  # round 1: b is a live member, so it waits
    assert r.status_code == 202 and r.json()["barrier"]["missing"] == ["b"], r.text
    # b leaves: the round closes with a alone, and b is no member any more
    assert client.delete(f"/v1/sessions/{sid}/workers/b").status_code == 204
    listing = client.get(f"/v1/sessions/{sid}/workers").json()
    assert [w["worker"] for w in listing["workers"]] == ["a"]
    assert listing["round"]["version"] == 2
    np.testing.assert_array_equal(params(client, sid), [-4.0, -4.0])  # -(1+3)/2 - 2
    # b's gradient for the round that closed without it is refused and makes it no member
    assert_problem(step(client, sid, "b", [5.0, 5.0], base_version=1), 409, "stale-gradient")
    assert [w["worker"] for w in client.get(f"/v1/sessions/{sid}/workers").json()["workers"]] == [
        "a"
    ]
    # b rejoins: it is told the version to compute on, starts counting afresh, is waited for
    r = client.put(f"/v1/sessions/{sid}/workers/b")
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    rows = {w["worker"]: w for w in client.get(f"/v1/sessions/{sid}/workers").json()["workers"]}
    assert rows["b"]["live"] and rows["b"]["rounds"] == 0 and rows["b"]["last_version"] is None
    r = step(client, sid, "a", [1.0, 1.0], base_version=2)
    assert r.status_code == 202 and r.json()["barrier"]["missing"] == ["b"], r.text
    r = step(client, sid, "b", [3.0, 3.0], base_version=2)
    assert r.status_code == 200 and r.json()["contributors"] == ["a", "b"], r.text
    np.testing.assert_array_equal(params(client, sid), [-6.0, -6.0])
    rows = {w["worker"]: w for w in client.get(f"/v1/sessions/{sid}/workers").json()["workers"]}
    assert (rows["a"]["rounds"], rows["b"]["rounds"], rows["b"]["last_version"]) == (3, 1, 2)
