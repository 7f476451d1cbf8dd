"""The Redis store's gradient log (DESIGN §5): steps kept as gradients between snapshots
are replayed bit for bit by any process, and the keys stay exactly what meta names."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.codec import safetensors
from app.core.config import Settings
from app.main import create_app
from app.store import RedisStore
from tests.fixtures_api import create, decode, tensors

pytestmark = pytest.mark.parametrize("store_kind", ["redis", "cluster"])
ST = "application/x-safetensors"

CONFIGS: list[dict[str, Any]] = [
    {
        "optimizer": "adam",
        "hyperparams": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01},
        "max_grad_norm": 0.5,
    },
    {"optimizer": "nadam", "hyperparams": {"lr": 0.01, "decoupled_weight_decay": True}},
    {"optimizer": "sgd", "hyperparams": {"lr": 0.1, "momentum": 0.9, "maximize": True}},
    {
        "optimizer": "adamw",
        "schedule": {"name": "cosine", "total_steps": 30, "warmup_steps": 5},
        "dtype": "float64",
    },
]


def params0(dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w": rng.standard_normal((6, 5)).astype(dtype),
        "b": rng.standard_normal(5).astype(dtype),
    }


def grads(t: int, dtype: str = "float32", only: str | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 + t)
    g = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params0(dtype).items()}
    return {only: g[only]} if only else g


def store_of(client: TestClient) -> RedisStore:
    store = client.app.state.engine.store  # type: ignore[attr-defined]
    assert isinstance(store, RedisStore)
    return store


def session_keys(settings: Settings, sid: str) -> list[str]:
    """Every key of the session (one cluster slot: its hash tag), by SCAN."""
    url = settings.redis_url
    assert url is not None
    if settings.redis_cluster:
        with redis.RedisCluster.from_url(url) as rc:
            node = rc.get_node_from_key(f"optd:{{{sid}}}:meta")
            found = rc.scan_iter(match=f"optd:{{{sid}}}:*", target_nodes=node)
            return sorted(k.decode() for k in found)
    with redis.Redis.from_url(url) as r:
        return sorted(k.decode() for k in r.scan_iter(match=f"optd:{{{sid}}}:*"))


def run_script(client: TestClient, sid: str, dtype: str) -> list[Any]:
    """Steps (some partial), a PATCH, a params write and a state round trip, everything
    each answer carried; the same script on another store must give the same bits."""
    out: list[Any] = []
    for t in range(11):
        r = client.post(
            f"/v1/sessions/{sid}/step",
            json={"grads": tensors(grads(t, dtype, "b" if t % 4 == 3 else None))},
        )
        assert r.status_code == 200, r.text
        out.append(decode(r.json()["params"]))
        if t == 4:
            r = client.patch(f"/v1/sessions/{sid}", json={"hyperparams": {"lr": 0.003}})
            assert r.status_code == 200, r.text
        if t == 6:
            r = client.put(f"/v1/sessions/{sid}/params", json={"params": {"b": [1.0] * 5}})
            assert r.status_code == 200, r.text
        if t == 8:
            state = client.get(f"/v1/sessions/{sid}/state").json()
            out.append(state["tensors"])
            r = client.put(f"/v1/sessions/{sid}/state", json=state)
            assert r.status_code == 200, r.text
    out.append(client.get(f"/v1/sessions/{sid}/state").json()["tensors"])
    return out


def same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    else:
        assert a == b


def post_step(client: TestClient, sid: str, g: dict[str, np.ndarray], wire: str) -> Any:
    if wire == "json":
        return client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(g)}).json()
    # safetensors in the session's order: the server logs the body's bytes without a copy
    r = client.post(
        f"/v1/sessions/{sid}/step",
        content=safetensors.encode(g),
        headers={"content-type": ST, "accept": "application/json"},
    )
    return r.json()


@pytest.mark.parametrize("wire", ["json", "safetensors"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["optimizer"])
def test_two_processes_and_a_reader_see_the_memory_stores_bits(
    make_client: Callable[..., TestClient], config: dict[str, Any], wire: str
) -> None:
    """Two API processes alternate steps (each replays the other's logged steps onto its
    copy), a third only reads (replays onto the snapshot): all of it bit for bit what the
    embedded store, which keeps no log, computes for the same requests."""
    dtype = config.get("dtype", "float32")
    a, b, reader = make_client(), make_client(), make_client()
    mem = TestClient(create_app(Settings(redis_url=None)))
    with mem:
        sid = create(a, params0(dtype), **config)
        ref = create(mem, params0(dtype), **config)
        for t in range(17):
            client = b if t % 5 in (0, 3) else a
            got = post_step(client, sid, grads(t, dtype), wire)
            want = post_step(mem, ref, grads(t, dtype), wire)
            same(decode(got["params"]), decode(want["params"]))
            seen = reader.get(f"/v1/sessions/{sid}/params").json()
            same(decode(seen["params"]), decode(want["params"]))
            assert got["version"] == seen["version"] == t + 1
    appended = sum(store_of(c).stats["log_appends"] for c in (a, b))
    assert appended >= 10  # the steps were logged, not snapshotted
    staged = sum(store_of(c).stats["log_staged"] for c in (a, b))
    # written while computing (an optimistic step that lost its race staged one more)
    assert (staged >= appended) if wire == "safetensors" else staged == 0
    assert store_of(b).stats["log_replays"] > 0 and store_of(reader).stats["log_replays"] > 0


def test_patch_params_write_and_checkpoints_over_a_pending_log(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    mem = TestClient(create_app(Settings(redis_url=None)))
    config = {"optimizer": "adam", "hyperparams": {"lr": 0.01, "weight_decay": 0.1}}
    with mem:
        got = run_script(client, create(client, params0(), **config), "float32")
        want = run_script(mem, create(mem, params0(), **config), "float32")
    same(got, want)
    assert store_of(client).stats["log_appends"] >= 5


def test_a_restarted_process_replays_the_log(make_client: Callable[..., TestClient]) -> None:
    first = make_client(log_steps=6)
    sid = create(first, params0(), optimizer="adam")
    for t in range(4):
        last = first.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads(t))}).json()
    assert store_of(first).stats["log_appends"] == 4
    fresh = make_client(log_steps=6)  # a new process: nothing cached
    seen = fresh.get(f"/v1/sessions/{sid}/params").json()
    same(decode(seen["params"]), decode(last["params"]))
    assert store_of(fresh).stats["log_replays"] == 4


@pytest.mark.parametrize("every", [1, 4])
def test_snapshot_every_n_steps_and_no_orphan_keys(
    make_client: Callable[..., TestClient], settings: Settings, every: int
) -> None:
    client = make_client(log_steps=every)
    sid = create(client, params0(), optimizer="adam", ttl_s=3600)
    for t in range(1, 10):
        r = client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads(t))})
        assert r.status_code == 200
        pending = t % every if every > 1 else 0
        names = session_keys(settings, sid)
        slots = [k for k in names if ":slot:" in k]
        logs = [k for k in names if ":log:" in k]
        recs = [k for k in names if ":logrec:" in k]
        assert len(slots) == 3  # param, exp_avg, exp_avg_sq: one chunk each, no orphans
        assert len(logs) == len(recs) == pending, names
    assert store_of(client).stats["log_appends"] == (0 if every == 1 else 7)
    url = settings.redis_url
    assert url is not None
    client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads(0))})
    names = session_keys(settings, sid)
    cls = redis.RedisCluster if settings.redis_cluster else redis.Redis
    with cls.from_url(url) as r:
        assert all(0 < r.ttl(k) <= 3600 for k in names if ":lock" not in k), names
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert [k for k in session_keys(settings, sid) if ":idem:" not in k] == []


def test_small_sessions_snapshot_by_default(make_client: Callable[..., TestClient]) -> None:
    """Below OPTD_LOG_MIN_BYTES (default 1 MiB) a step rewrites the state: for small states
    that is as cheap as a log entry, and readers never replay."""
    client = make_client(log_min_bytes=2**20)
    sid = create(client, params0(), optimizer="adam")
    for t in range(5):
        client.post(f"/v1/sessions/{sid}/step", json={"grads": tensors(grads(t))})
    assert store_of(client).stats["log_appends"] == 0


def test_a_refused_step_leaves_no_staged_gradient(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    """The gradient is written while the step computes; a step refused there (NaN) must
    not leave it behind."""
    client = make_client()
    sid = create(client, params0(), optimizer="adam")
    post_step(client, sid, grads(0), "safetensors")
    before = session_keys(settings, sid)
    bad = grads(1)
    bad["b"][2] = np.nan
    r = client.post(
        f"/v1/sessions/{sid}/step",
        content=safetensors.encode(bad),
        headers={"content-type": ST},
    )
    assert r.status_code == 422
    for _ in range(100):  # the discard runs in the background
        if session_keys(settings, sid) == before:
            break
        time.sleep(0.02)
    assert session_keys(settings, sid) == before
    assert post_step(client, sid, grads(1), "safetensors")["version"] == 2


def test_a_warm_step_is_one_round_trip_and_a_stale_cache_is_never_trusted(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    """A process stepping the session it committed last sends one script for the state (the
    commit's compare-and-set) and one for its history point; when another process moved
    on, the commit fails, the step reloads and recomputes; preconditions are checked
    against the store, not the cache."""
    a, b = make_client(), make_client()
    sid = create(a, params0(), optimizer="adam")
    post_step(a, sid, grads(0), "json")
    url = settings.redis_url
    assert url is not None
    cls = redis.RedisCluster if settings.redis_cluster else redis.Redis
    with cls.from_url(url) as r:

        def calls() -> dict[str, int]:
            if isinstance(r, redis.RedisCluster):  # the node that holds the session
                node = r.get_node_from_key(f"optd:{{{sid}}}:meta")
                stats = r.info("commandstats", target_nodes=node)
            else:
                stats = r.info("commandstats")
            return {k: int(c["calls"]) for k, c in stats.items() if isinstance(c, dict)}

        before = calls()
        post_step(a, sid, grads(1), "json")
        after = calls()
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        # the commit, then the history point (issue #19; OPTD_HISTORY_POINTS=0: the commit
        # alone); scripts count their inner commands too
        assert delta["cmdstat_evalsha"] == 2
        assert "cmdstat_hgetall" not in delta and "cmdstat_exec" not in delta  # no load, no MULTI
    post_step(b, sid, grads(2), "json")  # b moves on: a's cache (version 2) is stale
    r = a.post(
        f"/v1/sessions/{sid}/step",
        json={"grads": tensors(grads(3)), "base_version": 3},
        headers={"if-match": '"3"'},
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4 and r.json()["staleness"] == 0


def test_reading_meta_never_replays(make_client: Callable[..., TestClient]) -> None:
    """GET of a session (meta only) from a process that is behind reads no slot and
    replays nothing, however long the pending log (sync rounds poll like this)."""
    a = make_client(log_steps=8)
    sid = create(a, params0(), optimizer="adam")
    for t in range(5):
        post_step(a, sid, grads(t), "json")
    cold = make_client(log_steps=8)
    assert cold.get(f"/v1/sessions/{sid}").json()["version"] == 5
    assert store_of(cold).stats["log_replays"] == 0 and store_of(cold).stats["slot_reads"] == 0
