"""Params and checkpoints: round trips that continue bit-identically, across stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from app.core.config import Settings
from app.main import create_app
from tests.fixtures_api import assert_problem, create, decode, tensors

ST = "application/x-safetensors"
P = {"w": np.linspace(-1, 1, 12).reshape(3, 4), "b": np.zeros(4)}


def grads(t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(t)
    return {k: rng.standard_normal(v.shape) for k, v in P.items()}


def run_steps(client: TestClient, sid: str, ts: range) -> dict[str, np.ndarray]:
    for t in ts:
        r = client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads(t))})
        assert r.status_code == 200, r.text
    return decode(client.get(f"/v1/sessions/{sid}/params").json()["params"])


@pytest.mark.parametrize("wire", ["json", "safetensors"])
def test_checkpoint_into_other_store(client: TestClient, wire: str) -> None:
    """Export from this store, import into a fresh server on the embedded store, and
    both continue identically (nadam: slots plus per-tensor scalar state)."""
    cfg = {"optimizer": "nadam", "hyperparams": {"lr": 0.01}, "dtype": "float64"}
    sid = create(client, P, **cfg)
    run_steps(client, sid, range(5))
    # a subset step so per-tensor step counts differ
    client.post(f"/v1/sessions/{sid}/step", json={"grads": {"b": tensors(grads(9))["b"]}})
    accept = {"accept": ST} if wire == "safetensors" else {}
    r = client.get(f"/v1/sessions/{sid}/state", headers=accept)
    assert r.status_code == 200, r.text
    with TestClient(create_app(Settings(redis_url=None))) as other:
        if wire == "safetensors":
            assert "exp_avg/w" in st_load(r.content)
            put = other.put(
                "/v1/sessions/copy1/state", content=r.content, headers={"content-type": ST}
            )
        else:
            put = other.put("/v1/sessions/copy1/state", json=r.json())
        assert put.status_code == 201, put.text
        mine = run_steps(client, sid, range(10, 15))
        theirs = run_steps(other, "copy1", range(10, 15))
        info = other.get("/v1/sessions/copy1").json()
        assert info["params"]["b"]["step"] == 11 and info["params"]["w"]["step"] == 10
    for k in P:
        np.testing.assert_array_equal(mine[k], theirs[k])
    # restoring into an existing session replaces its state and bumps the version
    again = client.put(
        f"/v1/sessions/{sid}/state", json=client.get(f"/v1/sessions/{sid}/state").json()
    )
    assert again.status_code == 200 and again.json()["created"] is False


def test_put_params_keeps_state(client: TestClient) -> None:
    sid = create(client, P, optimizer="adam", dtype="float64")
    run_steps(client, sid, range(3))
    before = client.get(f"/v1/sessions/{sid}/state").json()
    r = client.put(f"/v1/sessions/{sid}/params", json={"params": {"b": [1.0, 2.0, 3.0, 4.0]}})
    assert r.status_code == 200 and r.json()["version"] == 4
    after = client.get(f"/v1/sessions/{sid}/state").json()
    assert after["tensors"]["exp_avg/b"] == before["tensors"]["exp_avg/b"]
    assert after["tensors"]["param/b"]["data"] == [1.0, 2.0, 3.0, 4.0]
    assert after["tensors"]["param/w"] == before["tensors"]["param/w"]
    assert_problem(
        client.put(f"/v1/sessions/{sid}/params", json={"params": {"b": [1.0]}}),
        422,
        "invalid-tensor",
    )
    st = client.put(
        f"/v1/sessions/{sid}/params",
        content=st_save({"b": np.ones(4)}),
        headers={"content-type": ST, "If-Match": '"4"'},
    )
    assert st.status_code == 200 and st.json()["version"] == 5


def test_params_subset_safetensors_and_etag(client: TestClient) -> None:
    sid = create(client, P)
    r = client.get(f"/v1/sessions/{sid}/params?names=b", headers={"accept": ST})
    assert (
        r.status_code == 200
        and r.headers["ETag"] == '"0"'
        and r.headers["Vary"] == "Accept, Optd-Response-Dtype"
    )
    assert set(st_load(r.content)) == {"b"}
    assert_problem(client.get(f"/v1/sessions/{sid}/params?names=zzz"), 422, "invalid-tensor")
    assert_problem(client.get(f"/v1/sessions/{sid}/params", headers={"accept": "text/csv"}), 406)


def test_long_poll_min_version(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    sid = create(client, P, optimizer="sgd")
    result: dict[str, int] = {}

    def poll() -> None:
        r = client.get(f"/v1/sessions/{sid}/params?min_version=1&wait=10")
        result["version"] = r.json()["version"]

    t = threading.Thread(target=poll)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads(0))})
    t.join(15)
    assert result["version"] == 1 and time.monotonic() - t0 < 5
    # a wait that expires returns the current version
    r = client.get(f"/v1/sessions/{sid}/params?min_version=9&wait=0.2")
    assert r.status_code == 200 and r.json()["version"] == 1
