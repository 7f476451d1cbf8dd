"""Sessions CRUD, optimizers, health and metrics, on both stores."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save

from tests.fixtures_api import assert_problem, create, tensors

P = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, dtype=np.float32)}


def test_create_get_delete(client: TestClient) -> None:
    r = client.post(
        "/v1/sessions",
        json={
            "optimizer": "adamw",
            "hyperparams": {"lr": 0.01},
            "params": {"w": tensors(P)["w"], "b": [0.0, 0.0, 0.0], "s": 1.5},
            "schedule": {"name": "cosine", "total_steps": 100, "warmup_steps": 10},
            "groups": [{"match": ["b"], "weight_decay": 0.0}],
            "labels": {"project": "demo"},
        },
    )
    assert r.status_code == 201, r.text
    info = r.json()
    sid = info["id"]
    assert r.headers["Location"] == f"/v1/sessions/{sid}" and r.headers["ETag"] == '"0"'
    assert info["hyperparams"]["weight_decay"] == 0.01 and info["hyperparams"]["betas"] == [
        0.9,
        0.999,
    ]
    assert info["params"] == {
        "w": {"shape": [2, 3], "step": 0},
        "b": {"shape": [3], "step": 0},
        "s": {"shape": [], "step": 0},
    }
    assert info["num_params"] == 10 and info["version"] == 0 and info["step"] == 0
    assert info["lr"] == 0.01 * 0.1  # warmup: t / warmup_steps at the next step
    assert info["state_bytes"] == 10 * 4 * 3
    got = client.get(f"/v1/sessions/{sid}")
    assert got.status_code == 200 and got.json()["labels"] == {"project": "demo"}
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert_problem(client.get(f"/v1/sessions/{sid}"), 404, "not-found")
    assert_problem(client.delete(f"/v1/sessions/{sid}"), 404, "not-found")


def test_create_from_safetensors(client: TestClient) -> None:
    config = {"optimizer": "sgd", "hyperparams": {"lr": 0.1, "momentum": 0.9}}
    body = st_save(P, metadata={"config": orjson.dumps(config).decode()})
    r = client.post(
        "/v1/sessions", content=body, headers={"content-type": "application/x-safetensors"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["hyperparams"]["momentum"] == 0.9
    assert r.json()["params"]["w"]["shape"] == [2, 3]


def test_list_paginates_and_filters(client: TestClient) -> None:
    ids = {create(client, P, labels={"team": "a" if i % 2 else "b"}) for i in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/sessions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).json()
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    team_a = client.get("/v1/sessions?label=team=a").json()["sessions"]
    assert len(team_a) == 3 and all(s["labels"]["team"] == "a" for s in team_a)


def test_patch_hyperparams(client: TestClient) -> None:
    sid = create(client, P, optimizer="adam")
    r = client.patch(f"/v1/sessions/{sid}", json={"hyperparams": {"lr": 0.5, "amsgrad": True}})
    assert r.status_code == 200, r.text
    assert r.json()["lr"] == 0.5 and r.json()["hyperparams"]["amsgrad"] is True
    assert r.json()["version"] == 1 and r.headers["ETag"] == '"1"'
    step = client.post(f"/v1/sessions/{sid}/step", json={"grads": {"b": [1.0, 1.0, 1.0]}})
    assert step.status_code == 200, step.text
    body = assert_problem(
        client.patch(f"/v1/sessions/{sid}", json={"hyperparams": {"lr": -1}}), 422
    )
    assert body["type"] == "urn:optd:problem:invalid-config" and "lr" in body["detail"]
    assert_problem(
        client.patch(f"/v1/sessions/{sid}", json={"optimizer": "sgd"}), 422, "invalid-config"
    )
    assert_problem(
        client.patch(f"/v1/sessions/{sid}", json={"labels": {}}, headers={"If-Match": '"0"'}), 412
    )
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 2


def test_bad_config_is_named(client: TestClient) -> None:
    cases = [
        ({"optimizer": "adamz"}, "optimizer"),
        ({"hyperparams": {"lr": -0.1}}, "hyperparams.lr"),
        ({"hyperparams": {"betas": [0.9, 1.0]}}, "hyperparams.betas"),
        ({"hyperparams": {"momentum": 0.9}}, "hyperparams.momentum"),
        ({"dtype": "int8"}, "dtype"),
        ({"schedule": {"name": "cosine"}}, "schedule"),
        ({"mode": "sync"}, "mode"),
        ({"bogus": 1}, "bogus"),
    ]
    for config, field in cases:
        r = client.post("/v1/sessions", json={"params": {"b": [1.0]}, **config})
        body = assert_problem(r, 422, "invalid-config")
        assert field in body["detail"], (config, body)


def test_optimizers_health_metrics(client: TestClient) -> None:
    opts = client.get("/v1/optimizers").json()["optimizers"]
    names = {o["name"] for o in opts}
    assert names == {
        "sgd",
        "adam",
        "adamw",
        "nadam",
        "radam",
        "adamax",
        "adagrad",
        "rmsprop",
        "adabelief",
        "lion",
    }
    adam = next(o for o in opts if o["name"] == "adam")
    assert adam["defaults"]["lr"] == 0.001 and "properties" in adam["hyperparams_schema"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    sid = create(client, P)
    client.post(f"/v1/sessions/{sid}/step", json={"grads": {"b": [1.0, 1.0, 1.0]}})
    text = client.get("/metrics").text
    assert "optd_steps_total 1.0" in text
    assert 'optd_step_phase_seconds_count{phase="compute"} 1.0' in text
