"""/step end to end on both stores: the service reproduces app.optim bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from app.optim import REGISTRY
from app.optim.local import LocalOptimizer
from tests.fixtures_api import assert_problem, create, decode, tensors

ST = "application/x-safetensors"


def params0(dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "layer.weight": rng.standard_normal((4, 3)).astype(dtype),
        "layer.bias": rng.standard_normal(3).astype(dtype),
        "scale": np.array(0.5, dtype=dtype),
    }


def grads_at(t: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + t)
    return {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params0(dtype).items()}


def step_json(client: TestClient, sid: str, grads: dict[str, np.ndarray], **kw: Any) -> Any:
    return client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads), **kw})


def step_st(client: TestClient, sid: str, grads: dict[str, np.ndarray], **headers: str) -> Any:
    return client.post(
        f"/v1/sessions/{sid}/step",
        content=st_save(grads),
        headers={"content-type": ST, "accept": ST, **headers},
    )


@pytest.mark.parametrize("wire", ["json", "safetensors"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_100_steps_bitwise(client: TestClient, wire: str, dtype: str) -> None:
    hp = {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}
    sid = create(client, params0(dtype), optimizer="adam", hyperparams=hp, dtype=dtype)
    ref = LocalOptimizer("adam", params0(dtype), hp, dtype=dtype)
    for t in range(100):
        g = grads_at(t, dtype)
        ref.step(g)
        r = step_json(client, sid, g) if wire == "json" else step_st(client, sid, g)
        assert r.status_code == 200, r.text
    if wire == "json":
        body = r.json()
        got = decode(body["params"])
        assert body["version"] == 100 and body["step"] == 100
    else:
        got = st_load(r.content)
        assert r.headers["Optd-Version"] == "100" and r.headers["ETag"] == '"100"'
    for name, want in ref.params.items():
        assert got[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got[name].reshape(want.shape), want)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_optimizer_matches_local(client: TestClient, name: str) -> None:
    sid = create(client, params0(), optimizer=name, hyperparams={"lr": 0.01})
    ref = LocalOptimizer(name, params0(), {"lr": 0.01})
    for t in range(20):
        g = grads_at(t)
        ref.step(g)
        r = step_st(client, sid, g) if t % 2 else step_json(client, sid, g)
        assert r.status_code == 200, r.text
    got = decode(client.get(f"/v1/sessions/{sid}/params").json()["params"])
    for k, want in ref.params.items():
        np.testing.assert_array_equal(got[k], want)


def test_subset_step_and_return_updated(client: TestClient) -> None:
    sid = create(client, params0(), optimizer="adam")
    r = client.post(
        f"/v1/sessions/{sid}/step?return=updated", json={"grads": {"layer.bias": [1.0, 2.0, 3.0]}}
    )
    assert r.status_code == 200, r.text
    assert set(r.json()["params"]) == {"layer.bias"}
    info = client.get(f"/v1/sessions/{sid}").json()
    assert info["params"]["layer.bias"]["step"] == 1
    assert info["params"]["layer.weight"]["step"] == 0
    p = decode(client.get(f"/v1/sessions/{sid}/params").json()["params"])
    np.testing.assert_array_equal(p["layer.weight"], params0()["layer.weight"])


def test_half_precision_grads(client: TestClient) -> None:
    sid = create(client, params0(), optimizer="sgd", hyperparams={"lr": 0.5})
    g = {k: np.full(v.shape, 0.25, dtype=np.float16) for k, v in params0().items()}
    r = step_st(client, sid, g)
    assert r.status_code == 200, r.text
    got = st_load(r.content)
    np.testing.assert_array_equal(got["layer.bias"], params0()["layer.bias"] - np.float32(0.125))


def test_prefer_minimal_and_if_match(client: TestClient) -> None:
    sid = create(client, params0(), optimizer="sgd")
    g = grads_at(0)
    r = client.post(
        f"/v1/sessions/{sid}/step",
        json={"grads": tensors(g)},
        headers={"Prefer": "return=minimal", "If-Match": '"0"'},
    )
    assert r.status_code == 204 and r.headers["ETag"] == '"1"' and not r.content
    r = client.post(
        f"/v1/sessions/{sid}/step", json={"grads": tensors(g)}, headers={"If-Match": '"0"'}
    )
    assert assert_problem(r, 412, "precondition-failed")["current_version"] == 1
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1


def test_staleness(client: TestClient) -> None:
    sid = create(
        client,
        params0(),
        optimizer="sgd",
        hyperparams={"lr": 1.0},
        max_staleness=1,
        staleness_lr="inverse",
    )
    g = {"scale": np.array(1.0, dtype=np.float32)}
    for _ in range(3):
        assert step_json(client, sid, g).status_code == 200
    r = step_json(client, sid, g, base_version=1)  # 2 behind
    body = assert_problem(r, 409, "stale-gradient")
    assert body["current_version"] == 3
    r = step_json(client, sid, g, base_version=2)  # 1 behind: lr / 2
    assert r.status_code == 200 and r.json()["staleness"] == 1 and r.json()["lr"] == 0.5
    assert decode(r.json()["params"])["scale"] == np.float32(0.5 - 3 - 0.5)
    assert_problem(step_json(client, sid, g, base_version=99), 409, "conflict")


def test_idempotency_replay(client: TestClient) -> None:
    sid = create(client, params0(), optimizer="adam")
    g = tensors(grads_at(0))
    hdr = {"Idempotency-Key": "k-1"}
    r1 = client.post(f"/v1/sessions/{sid}/step", json={"grads": g}, headers=hdr)
    r2 = client.post(f"/v1/sessions/{sid}/step", json={"grads": g}, headers=hdr)
    assert r1.status_code == r2.status_code == 200
    assert r2.headers["Idempotent-Replayed"] == "true"
    first = r2.json().pop("replayed")
    assert r2.json() == {**r1.json(), "replayed": first}  # nothing moved on: the same answer
    assert first == {k: r1.json()[k] for k in ("version", "step", "lr", "grad_norm", "staleness")}
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1
    g2 = tensors(grads_at(1))
    r3 = client.post(f"/v1/sessions/{sid}/step", json={"grads": g2}, headers=hdr)
    assert_problem(r3, 422, "idempotency-mismatch")


def test_loss_and_worker_recorded(client: TestClient) -> None:
    sid = create(client, params0(), optimizer="adam")
    r = step_st(client, sid, grads_at(0), **{"Optd-Loss": "0.25", "Optd-Worker": "w-1"})
    assert r.status_code == 200
    assert client.get(f"/v1/sessions/{sid}").json()["last_loss"] == 0.25


def test_base_version_ahead_is_a_plain_conflict(client: TestClient) -> None:
    sid = create(client, params0(), optimizer="sgd")
    r = step_json(client, sid, grads_at(0), base_version=5)
    body = assert_problem(r, 409, "conflict")
    assert "ahead" in body["detail"] and body["current_version"] == 0


def test_create_is_idempotent(client: TestClient) -> None:
    body = {"optimizer": "adam", "params": tensors(params0())}
    hdr = {"Idempotency-Key": "create-1"}
    r1 = client.post("/v1/sessions", json=body, headers=hdr)
    r2 = client.post("/v1/sessions", json=body, headers=hdr)
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["id"] == r2.json()["id"] and r2.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/sessions").json()["sessions"]) == 1
    other = client.post("/v1/sessions", json={**body, "optimizer": "sgd"}, headers=hdr)
    assert_problem(other, 422, "idempotency-mismatch")
