"""Idempotency keys (DESIGN §3) across tenants and session lives (issue #16 items 6, 7),
on every store: another tenant sees exactly what a never-used key gives it, and a record
never outlives the session it was stored with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.ids import sid_for_key
from tests.fixtures_api import assert_problem, tensors
from tests.test_auth import A, B, bearer, keys_file

P = {"w": np.zeros(3, dtype=np.float32)}
SGD = {"optimizer": "sgd", "hyperparams": {"lr": 1.0}}


def test_idempotency_keys_do_not_cross_tenants(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys_file=keys_file(tmp_path))
    a, b = bearer(A), bearer(B)
    create = {"params": tensors(P), **SGD}
    r = client.post("/v1/sessions", json=create, headers=a | {"Idempotency-Key": "c1"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    step = f"/v1/sessions/{sid}/step"
    r = client.post(step, json={"grads": {"w": [1, 1, 1]}}, headers=a | {"Idempotency-Key": "k"})
    assert r.status_code == 200 and r.json()["version"] == 1
    # b under a's key, with another body and with the same one: 404, as for a new key
    for grads in ([2, 2, 2], [1, 1, 1]):
        r = client.post(step, json={"grads": {"w": grads}}, headers=b | {"Idempotency-Key": "k"})
        assert_problem(r, 404, "not-found")
    r = client.post(step, json={"grads": {"w": [3, 3, 3]}}, headers=b | {"Idempotency-Key": "n"})
    assert_problem(r, 404, "not-found")
    # a's retry is still a's replay, and a's next key is not blocked by anything b did
    r = client.post(step, json={"grads": {"w": [1, 1, 1]}}, headers=a | {"Idempotency-Key": "k"})
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    r = client.post(step, json={"grads": {"w": [1, 1, 1]}}, headers=a | {"Idempotency-Key": "n"})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    # b's create under a's create key makes b's own session, without naming a's
    r = client.post("/v1/sessions", json=create, headers=b | {"Idempotency-Key": "c1"})
    assert r.status_code == 201, r.text
    assert r.json()["id"] != sid and sid not in r.text and r.json()["tenant"] == "b"
    # b cannot squat the id a's create will get: it depends on the tenant too
    state = client.get(f"/v1/sessions/{sid}/state", headers=a).json()
    for squat in (sid_for_key("c2"), sid_for_key("c2", scope="b")):
        assert client.put(f"/v1/sessions/{squat}/state", json=state, headers=b).status_code == 201
    r = client.post("/v1/sessions", json=create, headers=a | {"Idempotency-Key": "c2"})
    assert r.status_code == 201, r.text
    assert r.json()["tenant"] == "a"
    again = client.post("/v1/sessions", json=create, headers=a | {"Idempotency-Key": "c2"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == r.json()["id"]


def test_idempotency_records_die_with_their_session(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    sid = client.post("/v1/sessions", json={"params": tensors(P), **SGD}).json()["id"]
    base = f"/v1/sessions/{sid}"
    body, key = {"grads": {"w": [1, 1, 1]}}, {"Idempotency-Key": "k"}
    assert client.post(base + "/step", json=body, headers=key).json()["version"] == 1
    state = client.get(base + "/state").json()
    assert client.delete(base).status_code == 204
    r = client.put(base + "/state", json=state)  # the id lives again, at version 0
    assert r.status_code == 201, r.text
    r = client.post(base + "/step", json=body, headers=key)
    assert r.status_code == 200, r.text
    assert "Idempotent-Replayed" not in r.headers  # applied: a new session's first step
    assert r.json()["version"] == 1 and r.json()["params"]["w"]["data"] == [-2.0] * 3
    assert client.get(base).json()["version"] == 1
    r = client.post(base + "/step", json=body, headers=key)  # and now it is a replay
    assert r.headers["Idempotent-Replayed"] == "true" and r.json()["version"] == 1
