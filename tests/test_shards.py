"""Sharded sessions (DESIGN §3) over plain HTTP on every store: bit for bit the unsharded
session, one consistent version for readers, exactly once per shard."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save

from app.engine.shards import plan
from app.optim import REGISTRY, Layout
from app.optim.base import CHUNK
from app.problems import InvalidConfig
from tests import shard_protocol as sp
from tests.fixtures_api import assert_problem, decode, tensors

ST = "application/x-safetensors"
# a tensor split over shards (80,000 elements > two chunks), then two small ones
SHAPES = {"body.weight": (400, 200), "head.bias": (7,), "norm.scale": (3,)}
CONFIG: dict[str, Any] = {
    "max_grad_norm": 5.0,
    "schedule": {"name": "cosine", "warmup_steps": 2, "total_steps": 12, "min_lr_ratio": 0.1},
    "groups": [{"match": ["*.bias"], "weight_decay": 0.0}],
}
HP: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "adam": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01},
    "adamw": {"lr": 0.01},
    "nadam": {"lr": 0.01},
    "radam": {"lr": 0.01},
    "adamax": {"lr": 0.01},
    "adagrad": {"lr": 0.1, "initial_accumulator_value": 0.1},
    "rmsprop": {"lr": 0.01, "centered": True, "momentum": 0.5},
    "adabelief": {"lr": 0.01},
    "lion": {"lr": 0.001, "weight_decay": 0.1},
}


def params0() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype("float32") for k, s in SHAPES.items()}


def grads_at(t: int, names: tuple[str, ...] = tuple(SHAPES)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 + t)
    return {k: (3 * rng.standard_normal(SHAPES[k])).astype("float32") for k in names}


def create_pair(client: TestClient, k: int, **config: Any) -> tuple[str, dict[str, Any]]:
    body = {"params": tensors(params0()), **CONFIG, **config}
    r = client.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    r2 = client.post("/v1/sessions", json={**body, "shards": k})
    assert r2.status_code == 201, r2.text
    return r.json()["id"], r2.json()


def plain_step(client: TestClient, sid: str, grads: dict[str, np.ndarray]) -> Any:
    headers = {"content-type": ST, "optd-loss": "0.5"}
    r = client.post(f"/v1/sessions/{sid}/step", content=st_save(grads), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def read(client: TestClient, sid: str) -> tuple[int, dict[str, np.ndarray]]:
    r = client.get(f"/v1/sessions/{sid}/params")
    assert r.status_code == 200, r.text
    return r.json()["version"], decode(r.json()["params"])


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k


def test_plan_cuts_on_the_chunk_grid_near_an_even_split() -> None:
    layout = Layout.build({"a": (100_000,), "b": (10,), "c": (70_000,)}, lambda _: 0)
    for k in (1, 2, 3, 4, 5):
        shards = plan(layout, k)
        assert [s.index for s in shards] == list(range(k))
        assert shards[0].start == 0 and shards[-1].stop == layout.total
        for s, nxt in zip(shards, shards[1:], strict=False):
            assert s.stop == nxt.start and s.stop > s.start
            assert s.stop % CHUNK == 0  # every cut on the norm's chunk grid
        for s in shards:  # the pieces tile the shard, in layout order
            assert sum(p.stop - p.start for p in s.pieces) == s.stop - s.start
    assert [(s.start, s.stop) for s in plan(layout, 2)] == [(0, 98_304), (98_304, 170_010)]
    assert [p.name for p in plan(layout, 2)[1].pieces] == ["a", "b", "c"]
    with pytest.raises(InvalidConfig):
        plan(Layout.build({"a": (40_000,), "b": (3,)}, lambda _: 0), 3)


@pytest.mark.parametrize("store_kind", ["memory"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_optimizer_bit_for_bit(name: str, client: TestClient) -> None:
    check_bit_for_bit(name, client)


@pytest.mark.parametrize("name", ["adam", "nadam", "adagrad"])
def test_bit_for_bit_on_every_store(name: str, make_client: Any, store_kind: str) -> None:
    # the math is the store's whatever the optimizer: three (per-tensor scalars, an
    # initial accumulator) on Redis and the cluster, where the step log replays them
    client = make_client()
    plain, sharded = check_bit_for_bit(name, client)
    if store_kind == "memory":
        return
    # the shards' gradients went to the log at prepare (staged) and their commits settled
    # them: another process, reading from the store alone, replays the same bits
    assert client.app.state.engine.store.stats["log_staged"] > 0
    other = make_client()
    assert_same(read(other, plain)[1], read(other, sharded)[1])


def check_bit_for_bit(name: str, client: TestClient) -> tuple[str, str]:
    plain, info = create_pair(client, 3, optimizer=name, hyperparams=HP[name])
    assert [s["id"] for s in info["shards"]] == [f"{info['id']}-s{k}" for k in range(3)]
    for t in range(8):
        # steps 3 and 5 leave tensors out (per-tensor step counts; a shard with no part)
        names = ("head.bias",) if t == 3 else ("body.weight", "norm.scale") if t == 5 else None
        g = grads_at(t, names) if names else grads_at(t)
        want = plain_step(client, plain, g)
        version, got = sp.step(client, info, g, loss=0.5)
        assert version == want["version"] == t + 1
    v_plain, p_plain = read(client, plain)
    v_sharded, p_sharded = read(client, info["id"])
    assert v_plain == v_sharded == 8
    assert_same(p_plain, p_sharded)
    d_plain = client.get(f"/v1/sessions/{plain}").json()
    d_shard = client.get(f"/v1/sessions/{info['id']}").json()
    for key in ("version", "step", "lr", "params", "num_params", "last_loss"):
        assert d_plain[key] == d_shard[key], key
    assert d_plain["state_bytes"] == d_shard["state_bytes"]
    hist_plain = client.get(f"/v1/sessions/{plain}/history").json()["points"]
    hist_shard = client.get(f"/v1/sessions/{info['id']}/history").json()["points"]
    strip = [{k: p[k] for k in ("version", "lr", "grad_norm")} for p in hist_plain]
    assert strip == [{k: p[k] for k in ("version", "lr", "grad_norm")} for p in hist_shard]
    return plain, info["id"]


def test_nan_is_refused_on_every_shard(client: TestClient) -> None:
    plain, info = create_pair(client, 2, check_finite=True)
    g = grads_at(0)
    g["body.weight"][399, 199] = np.nan  # in the last shard
    answers = sp.prepare(client, info, g)
    assert answers[0].status_code == 200
    assert_problem(answers[1], 422, "invalid-tensor")
    # a client that commits anyway with the refused shard's answer missing cannot apply a
    # NaN norm either: the shard refuses it
    bad = ["NaN"] + answers[0].json()["sumsq"]
    r = sp.commit(client, info["shards"][0], answers[0].json()["prepared"], bad, 0)
    assert_problem(r, 422, "invalid-tensor")
    assert read(client, info["id"])[0] == 0


def test_a_non_finite_gradient_is_refused_whole_without_check_finite(client: TestClient) -> None:
    # unsharded, an Inf makes the update non-finite and the step is refused; sharded, the
    # shard it falls in would learn that only after shard 0 applied: shard 0 refuses
    plain, info = create_pair(client, 2, check_finite=False)
    g = grads_at(0)
    g["norm.scale"][1] = np.inf
    assert_problem(
        client.post(f"/v1/sessions/{plain}/step", content=st_save(g), headers={"content-type": ST}),
        422,
        "invalid-tensor",
    )
    answers = [r.json() for r in sp.prepare(client, info, g)]  # no check: both answer
    sumsq = answers[0]["sumsq"] + answers[1]["sumsq"]
    assert "Infinity" in sumsq
    r = sp.commit(client, info["shards"][0], answers[0]["prepared"], sumsq, 0)
    assert_problem(r, 422, "invalid-tensor")
    described = client.get(f"/v1/sessions/{info['id']}").json()
    assert [s["version"] for s in described["shards"]] == [0, 0]


def test_commit_needs_if_match_and_a_known_token(client: TestClient) -> None:
    _, info = create_pair(client, 2)
    s0 = info["shards"][0]
    a = sp.prepare(client, info, grads_at(0))[0].json()
    r = client.post(
        f"/v1/sessions/{s0['id']}/step", json={"prepared": a["prepared"], "sumsq": a["sumsq"]}
    )
    assert_problem(r, 428, "precondition-required")
    r = sp.commit(client, s0, "not-a-token", a["sumsq"], 0)
    assert_problem(r, 409, "prepare-expired")
    r = sp.commit(client, info["shards"][1], a["prepared"], a["sumsq"], 0)  # shard 0's token
    assert_problem(r, 409, "prepare-expired")
    for body in (
        {"prepared": a["prepared"]},
        {"prepared": a["prepared"], "sumsq": ["x"]},
        {"prepared": a["prepared"], "sumsq": [1.0], "grads": {}},
    ):
        r = client.post(f"/v1/sessions/{s0['id']}/step", json=body, headers={"if-match": '"0"'})
        assert_problem(r, 400, "invalid-body")


def test_the_first_commit_of_a_version_wins_shard_0(client: TestClient) -> None:
    plain, info = create_pair(client, 2)
    a = [r.json() for r in sp.prepare(client, info, grads_at(0))]
    b = [r.json() for r in sp.prepare(client, info, grads_at(1))]
    sa = a[0]["sumsq"] + a[1]["sumsq"]
    sb = b[0]["sumsq"] + b[1]["sumsq"]
    assert sp.commit(client, info["shards"][0], a[0]["prepared"], sa, 0).status_code == 200
    # the loser learns it at shard 0 and never reaches shard 1
    assert_problem(sp.commit(client, info["shards"][0], b[0]["prepared"], sb, 0), 412)
    assert sp.commit(client, info["shards"][1], a[1]["prepared"], sa, 0).status_code == 200
    plain_step(client, plain, grads_at(0))
    assert_same(read(client, plain)[1], read(client, info["id"])[1])


def test_a_commit_retried_after_a_cut_connection_is_applied_once(client: TestClient) -> None:
    plain, info = create_pair(client, 2)
    answers = [r.json() for r in sp.prepare(client, info, grads_at(0))]
    sumsq = answers[0]["sumsq"] + answers[1]["sumsq"]
    for s, a in zip(info["shards"], answers, strict=True):
        first = sp.commit(client, s, a["prepared"], sumsq, 0, key=f"k-{s['index']}")
        assert first.status_code == 200
        again = sp.commit(client, s, a["prepared"], sumsq, 0, key=f"k-{s['index']}")
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.headers["optd-version"] == "1"
    plain_step(client, plain, grads_at(0))
    assert read(client, info["id"])[0] == 1
    assert_same(read(client, plain)[1], read(client, info["id"])[1])


def test_a_read_while_a_step_is_half_applied_answers_one_version(client: TestClient) -> None:
    plain, info = create_pair(client, 2)
    answers = [r.json() for r in sp.prepare(client, info, grads_at(0))]
    sumsq = answers[0]["sumsq"] + answers[1]["sumsq"]
    assert sp.commit(client, info["shards"][0], answers[0]["prepared"], sumsq, 0).status_code == 200
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.append(read(client, info["id"])))
    reader.start()
    time.sleep(0.3)
    assert not seen  # waiting for shard 1
    assert sp.commit(client, info["shards"][1], answers[1]["prepared"], sumsq, 0).status_code == 200
    reader.join(10)
    plain_step(client, plain, grads_at(0))
    assert seen and seen[0][0] == 1
    assert_same(read(client, plain)[1], seen[0][1])


def test_a_read_of_shards_that_never_agree_is_a_conflict(client: TestClient) -> None:
    _, info = create_pair(client, 2)
    answers = [r.json() for r in sp.prepare(client, info, grads_at(0))]
    sumsq = answers[0]["sumsq"] + answers[1]["sumsq"]
    assert sp.commit(client, info["shards"][0], answers[0]["prepared"], sumsq, 0).status_code == 200
    r = client.get(f"/v1/sessions/{info['id']}/params")
    assert_problem(r, 409, "conflict")
    assert r.headers["retry-after"] == "1"
    described = client.get(f"/v1/sessions/{info['id']}").json()
    assert described["version"] == 0 and [s["version"] for s in described["shards"]] == [1, 0]


def test_another_client_repairs_a_step_its_dead_client_left_half_applied(
    client: TestClient,
) -> None:
    plain, info = create_pair(client, 3)
    sp.step(client, info, grads_at(0))
    answers = [r.json() for r in sp.prepare(client, info, grads_at(1))]
    sumsq = [x for a in answers for x in a["sumsq"]]
    tokens = [a["prepared"] for a in answers]
    r = sp.commit(client, info["shards"][0], tokens[0], sumsq, 1, tokens=tokens, loss=0.5)
    assert r.status_code == 200
    assert sp.commit(client, info["shards"][2], tokens[2], sumsq, 1).status_code == 200
    # the client dies here: shard 1 is at 1, the others at 2
    described = client.get(f"/v1/sessions/{info['id']}").json()
    assert [s["version"] for s in described["shards"]] == [2, 1, 2]
    repair = described["repair"]
    assert repair["version"] == 2 and repair["tokens"] == tokens and repair["loss"] == 0.5
    # another client finishes it from the session info alone
    for s in described["shards"]:
        if s["version"] == repair["version"] - 1:
            k = s["index"]
            done = sp.commit(client, s, repair["tokens"][k], repair["sumsq"], repair["version"] - 1)
            assert done.status_code == 200, done.text
    described = client.get(f"/v1/sessions/{info['id']}").json()
    assert "repair" not in described and described["version"] == 2
    plain_step(client, plain, grads_at(0))
    plain_step(client, plain, grads_at(1))
    assert_same(read(client, plain)[1], read(client, info["id"])[1])
    r = client.post(f"/v1/sessions/{plain}/step", json={"grads": {}, "tokens": ["a"]})
    assert_problem(r, 400, "invalid-body")


def test_what_the_whole_and_the_parts_refuse(client: TestClient) -> None:
    plain, info = create_pair(client, 2)
    sid, s1 = info["id"], info["shards"][1]["id"]
    r = client.post(
        f"/v1/sessions/{sid}/step", content=st_save(grads_at(0)), headers={"content-type": ST}
    )
    assert_problem(r, 409, "conflict")
    assert_problem(client.post(f"/v1/sessions/{sid}/prepare", json={"grads": {}}), 409, "conflict")
    assert_problem(client.get(f"/v1/sessions/{sid}/state"), 409, "conflict")
    assert_problem(client.put(f"/v1/sessions/{sid}/params", json={"params": {}}), 409)
    assert_problem(client.delete(f"/v1/sessions/{s1}"), 409, "conflict")
    assert_problem(client.patch(f"/v1/sessions/{s1}", json={"hyperparams": {"lr": 1}}), 409)
    bad = {"params": tensors(params0()), "shards": 2}
    for extra in ({"mode": "sync", "workers": 2}, {"ttl_s": 60}, {"shards": 65}):
        assert_problem(client.post("/v1/sessions", json={**bad, **extra}), 422, "invalid-config")
    listed = [s["id"] for s in client.get("/v1/sessions").json()["sessions"]]
    assert sorted(listed) == sorted([plain, sid])
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    for gone in (sid, s1, info["shards"][0]["id"]):
        assert client.get(f"/v1/sessions/{gone}").status_code == 404


def test_patch_reaches_every_shard(client: TestClient) -> None:
    plain, info = create_pair(client, 2)
    for t in range(4):
        if t == 2:
            for sid in (plain, info["id"]):
                r = client.patch(f"/v1/sessions/{sid}", json={"hyperparams": {"lr": 0.05}})
                assert r.status_code == 200, r.text
        plain_step(client, plain, grads_at(t))
        sp.step(client, info, grads_at(t))
    assert_same(read(client, plain)[1], read(client, info["id"])[1])
    assert client.get(f"/v1/sessions/{info['id']}").json()["hyperparams"]["lr"] == 0.05
    # a bad body is refused by the session itself: no shard changed
    r = client.patch(f"/v1/sessions/{info['id']}", json={"hyperparams": {"lr": -1.0}})
    assert_problem(r, 422, "invalid-config")
    for s in info["shards"]:
        assert client.get(f"/v1/sessions/{s['id']}").json()["hyperparams"]["lr"] == 0.05


def test_a_retried_create_finds_the_same_sharded_session(client: TestClient) -> None:
    body = {"params": tensors(params0()), "shards": 2}
    r1 = client.post("/v1/sessions", json=body, headers={"idempotency-key": "mk-1"})
    r2 = client.post("/v1/sessions", json=body, headers={"idempotency-key": "mk-1"})
    assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
    assert r2.headers["idempotent-replayed"] == "true"
    assert r1.json()["id"] == r2.json()["id"] and r2.json()["shards"] == r1.json()["shards"]
