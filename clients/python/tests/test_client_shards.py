"""Sharded sessions, client side, without a server: the layout, splitting and assembly,
and the two-phase step against an in-process fake (`sharded_fake`) through its failure
paths (412 from shard 0, prepare-expired, cut connections, a half-applied step, shards
that stay apart, owners per shard). Against a real server: test_client_shards_server.py."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import numpy as np
import pytest
from sharded_fake import OWNER, FakeSharded

import optd_client as oc
from optd_client import _sharded
from optd_client._shards import Layout, Piece, Shard, assemble, layout_of, split

rng = np.random.default_rng(7)
PARAMS = {
    "a": rng.standard_normal((3, 5)).astype(np.float32),  # split over shards 0 and 1
    "b": rng.standard_normal(4).astype(np.float32),
    "c": np.float32(0.5) * np.ones((2, 2, 2), np.float32),  # split over shards 1 and 2
    "d": np.array(1.5, np.float32),  # a scalar
}
CUTS = [
    [("a", 0, 9)],
    [("a", 9, 15), ("b", 0, 4), ("c", 0, 3)],
    [("c", 3, 8), ("d", 0, 1)],
]


def grads(seed: int) -> dict[str, np.ndarray[Any, Any]]:
    g = np.random.default_rng(seed)
    return {n: g.standard_normal(np.shape(p)).astype(np.float32) for n, p in PARAMS.items()}


def fake(**kw: Any) -> FakeSharded:
    return FakeSharded(PARAMS, CUTS, **kw)


def norm_of(g: dict[str, Any]) -> float:
    return math.sqrt(sum(float(np.dot(x.ravel(), x.ravel())) for x in f64(g).values()))


def f64(g: dict[str, Any]) -> dict[str, Any]:
    return {n: np.asarray(v, np.float64) for n, v in g.items()}


def expected(steps: list[dict[str, Any]], lr: float = 0.1, clip: float | None = None) -> Any:
    p = {n: np.asarray(v, np.float32).copy() for n, v in PARAMS.items()}
    for g in steps:
        norm = norm_of(g)
        scale = clip / (norm + 1e-6) if clip is not None and norm > clip else 1.0
        p = {n: (v - np.float32(lr * scale) * g[n]).astype(np.float32) for n, v in p.items()}
    return p


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == np.shape(want[n]) and np.array_equal(got[n], want[n]), n


# -- layout, split, assemble ------------------------------------------------------------


def test_layout_split_assemble_round_trip() -> None:
    layout = layout_of(fake().info())
    assert layout is not None and [s.id for s in layout.shards] == ["p-s0", "p-s1", "p-s2"]
    assert layout.shards[1].pieces[0] == Piece("a", 9, 15) and layout.shapes["d"] == ()
    g = grads(1)
    parts = split(layout, g)
    assert list(parts[1]) == ["a", "b", "c"] and parts[1]["a"].shape == (6,)
    assert np.array_equal(parts[2]["c"], g["c"].reshape(-1)[3:])
    assert_same(assemble(layout, parts), g)
    # a subset of the tensors: only those are split, and only whole ones assembled
    sub = split(layout, {"c": g["c"]})
    assert sub[0] == {} and list(sub[1]) == ["c"] and list(assemble(layout, sub)) == ["c"]


def test_split_refuses_unknown_names_and_other_shapes() -> None:
    layout = Layout((Shard("x-s0", 0, (Piece("w", 0, 6),)),), {"w": (2, 3)})
    with pytest.raises(oc.InvalidTensorError, match="no parameter 'v'"):
        split(layout, {"v": np.zeros(6)})
    with pytest.raises(oc.InvalidTensorError, match=r"shape \[3, 2\]"):
        split(layout, {"w": np.zeros((3, 2))})
    assert layout_of({"id": "x", "shards": None}) is None
    assert layout_of({"id": "x", "shards": []}) is None


def test_split_of_non_contiguous_gradients_is_row_major() -> None:
    layout = Layout(
        (Shard("x-s0", 0, (Piece("w", 0, 2),)), Shard("x-s1", 1, (Piece("w", 2, 6),))),
        {"w": (2, 3)},
    )
    w = np.arange(6, dtype=np.float32).reshape(3, 2).T  # a transposed view
    parts = split(layout, {"w": w})
    assert parts[0]["w"].tolist() == [0, 2] and parts[1]["w"].tolist() == [4, 1, 3, 5]


# -- the step against the fake -------------------------------------------------------------


@pytest.mark.parametrize("wire", ["safetensors", "json"])
def test_step_equals_the_unsharded_update(wire: Any) -> None:
    f = fake(max_grad_norm=1.0)
    with f.client(wire=wire) as client:
        s = client.session("p")
        s.info()
        steps = [grads(i) for i in range(4)]
        for g in steps:
            out = s.step(g, loss=0.5, worker="w1")
        assert_same(out, expected(steps, clip=1.0))
        assert_same(f.full(), expected(steps, clip=1.0))
        assert f.versions() == [4, 4, 4] and s.version == 4
        assert s.last is not None and s.last.step == 4 and s.last.lr == 0.1
        assert s.last.grad_norm == pytest.approx(norm_of(steps[-1]), rel=1e-12)
    k, body = f.commit_bodies[-1]
    assert len(body["sumsq"]) == 6 and body["loss"] == 0.5 and body["worker"] == "w1"
    assert [k for k, _ in f.commit_bodies[:3]] == [0] + sorted(k for k, _ in f.commit_bodies[1:3])


def test_a_handle_without_info_learns_the_layout_from_the_409() -> None:
    f = fake()
    with f.client() as client:
        s = client.session("p")
        s.step(grads(0))
        s.step(grads(1))
    paths = [r.url.path for r in f.requests]
    assert paths[:2] == ["/v1/sessions/p/step", "/v1/sessions/p"]
    assert paths.count("/v1/sessions/p/step") == 1 and f.versions() == [2, 2, 2]


def test_412_from_shard_0_starts_again() -> None:
    f = fake()
    raced = []

    def race(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/v1/sessions/p-s0/step" and not raced:
            raced.append(1)
            for sh in f.shards:  # another client's whole step lands first
                sh.version += 1
        return None

    f.faults.append(race)
    with f.client() as client:
        s = client.session("p")
        s.info()
        out = s.step(grads(0))
    assert f.versions() == [2, 2, 2] and s.version == 2
    assert_same(out, expected([grads(0)]))
    prepares = [r for r in f.requests if r.url.path.endswith("/prepare")]
    assert len(prepares) == 6  # every shard prepared twice


def test_prepare_expired_prepares_that_shard_again() -> None:
    f = fake()

    def expire(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/v1/sessions/p-s2/step":
            f.shards[2].tokens.clear()
            f.faults.remove(expire)
        return None

    f.faults.append(expire)
    with f.client() as client:
        s = client.session("p")
        s.info()
        out = s.step(grads(3))
    assert_same(out, expected([grads(3)])) and f.versions() == [1, 1, 1]
    commits = [(k, b) for k, b in f.commit_bodies if k == 2]
    assert len(commits) == 2 and commits[0][1]["sumsq"] == commits[1][1]["sumsq"]
    assert commits[0][1]["prepared"] != commits[1][1]["prepared"]
    prepares = [r.url.path for r in f.requests if r.url.path.endswith("/prepare")]
    assert prepares.count("/v1/sessions/p-s2/prepare") == 2


def test_a_cut_commit_is_resent_with_its_key_and_applied_once() -> None:
    f = fake()
    cut = []

    def apply_then_cut(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/v1/sessions/p-s1/step" and not cut:
            cut.append(f._answer(request))
            raise httpx.ReadError("connection reset")
        return None

    f.faults.append(apply_then_cut)
    with f.client() as client:
        s = client.session("p")
        s.info()
        out = s.step(grads(2))
    assert_same(out, expected([grads(2)])) and f.shards[1].applied == 1
    sent = [r for r in f.requests if r.url.path == "/v1/sessions/p-s1/step"]
    assert len(sent) == 2 and sent[0].headers["idempotency-key"] == sent[1].headers[
        "idempotency-key"
    ] and sent[0].content == sent[1].content  # fmt: skip


@pytest.mark.parametrize("same", [True, False])
def test_a_half_applied_step_is_finished_by_the_next_call(same: bool) -> None:
    f = fake()
    down = [0]

    def shard_2_down(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/v1/sessions/p-s2/step" and down[0] < 2:
            down[0] += 1
            raise httpx.ConnectError("refused")
        return None

    f.faults.append(shard_2_down)
    with f.client(retries=1) as client:
        s = client.session("p")
        s.info()
        with pytest.raises(oc.TransportError):
            s.step(grads(0))
        assert f.versions() == [1, 1, 0]
        second = grads(0) if same else grads(1)
        out = s.step(second)
    steps = [grads(0)] if same else [grads(0), grads(1)]
    assert_same(out, expected(steps)) and f.versions() == [len(steps)] * 3
    assert s.version == len(steps)


def test_shards_that_stay_apart_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sharded, "DIVERGED_WAIT_S", 0.05)
    f = fake()
    f.shards[0].version = 1  # another client committed shard 0 and died
    with f.client() as client:
        s = client.session("p")
        s.info()
        with pytest.raises(oc.ShardsDivergedError) as err:
            s.step(grads(0))
    assert err.value.problem["versions"][0] == 1 and f.versions() == [1, 0, 0]
    assert f.commit_bodies == [] and f.sleeps


def test_versions_that_catch_up_are_waited_for() -> None:
    f = fake()
    f.shards[0].version = 1
    prepares = [0]

    def catch_up(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/prepare"):
            prepares[0] += 1
            if prepares[0] == 4:  # the other client's commits land
                f.shards[1].version = f.shards[2].version = 1
        return None

    f.faults.append(catch_up)
    with f.client() as client:
        s = client.session("p")
        s.info()
        s.step(grads(0))
    assert f.versions() == [2, 2, 2] and prepares[0] == 5  # only the two behind again


def test_a_bad_gradient_is_refused_with_nothing_committed() -> None:
    f = fake()
    g = grads(0)
    g["c"][1, 1, 1] = np.nan  # in shard 2's piece
    with f.client() as client:
        s = client.session("p")
        s.info()
        with pytest.raises(oc.InvalidTensorError):
            s.step(g)
    assert f.commit_bodies == [] and f.versions() == [0, 0, 0]


def test_owners_are_followed_per_shard() -> None:
    f = fake()
    f.owned[1] = OWNER
    with f.client() as client:
        s = client.session("p")
        s.info()
        s.step(grads(0))
        s.step(grads(1))
    hosts = [(r.url.host, r.url.path) for r in f.requests if "-s1/" in r.url.path]
    assert hosts[0] == ("optd.test", "/v1/sessions/p-s1/prepare")
    assert all(h == "owner.test" for h, _ in hosts[1:]) and len(hosts) == 5
    assert all(r.url.host == "optd.test" for r in f.requests if "-s1/" not in r.url.path)


def test_async_client_steps_a_sharded_session() -> None:
    f = fake(max_grad_norm=0.5)

    async def go() -> dict[str, Any]:
        async with f.async_client() as client:
            s = client.session("p")
            await s.info()
            for i in range(3):
                out = await s.step(grads(i))
            return out

    out = asyncio.run(go())
    assert_same(out, expected([grads(i) for i in range(3)], clip=0.5))
    assert f.versions() == [3, 3, 3]


def test_a_subset_of_the_tensors_commits_every_shard() -> None:
    f = fake()
    g = {"c": grads(0)["c"]}  # shard 0 holds none of it: prepared empty, committed too
    with f.client() as client:
        s = client.session("p")
        s.info()
        out = s.step(g)
    assert f.versions() == [1, 1, 1] and sorted(out) == ["a", "b", "c", "d"]
    first = next(r for r in f.requests if r.url.path == "/v1/sessions/p-s0/prepare")
    assert first.content == b'{"grads":{}}' and first.headers["content-type"] == "application/json"
    want = (PARAMS["c"] - np.float32(0.1) * g["c"]).astype(np.float32)
    assert np.array_equal(out["c"], want) and np.array_equal(out["a"], PARAMS["a"])
