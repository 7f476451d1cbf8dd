"""Sharded sessions against a real `optd serve` (embedded store and Redis): bit-identical
to the unsharded session, a refused gradient applies nowhere, concurrent clients leave
every shard at one version, params reads and the torch adapter work unchanged."""

from __future__ import annotations

import asyncio
import threading
from importlib.util import find_spec
from typing import Any

import numpy as np
import pytest

import optd_client as oc
from optd_client import AsyncClient, Client

SCHEDULE = {"name": "cosine", "warmup_steps": 3, "total_steps": 20, "min_lr_ratio": 0.1}


def make_params(seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        "head": rng.standard_normal(100).astype(np.float32),
        "emb": rng.standard_normal((256, 300)).astype(np.float32),  # > 2 chunks: split
        "w": rng.standard_normal((64, 32)).astype(np.float32),
        "b": np.zeros(64, np.float32),
    }


def make_grads(i: int, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(100 + i)
    scale = np.float32(0.05 * (1 + i % 6))  # norms ~15..85: some steps are clipped
    return {n: (rng.standard_normal(np.shape(p)) * scale).astype(np.float32) for n, p in
            params.items()}  # fmt: skip


def run(client: Client, optimizer: str, shards: int | None, steps: int, **hyper: Any) -> Any:
    params = make_params()
    session = client.create_session(
        optimizer, params, shards=shards, max_grad_norm=40.0, schedule=SCHEDULE, **hyper
    )
    outs, infos = [], []
    for i in range(steps):
        outs.append(session.step(make_grads(i, params), loss=float(i)))
        infos.append(session.last)
    return session, outs, infos


def assert_bitwise(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert a[n].dtype == b[n].dtype and a[n].shape == b[n].shape, n
        assert np.array_equal(a[n].view(np.uint32), b[n].view(np.uint32)), n


@pytest.mark.parametrize(
    ("optimizer", "hyper"),
    [("adam", {"lr": 1e-2}), ("sgd", {"lr": 0.05, "momentum": 0.9}), ("adamw", {"lr": 3e-3})],
)
def test_sharded_equals_unsharded_bitwise(server_url: str, optimizer: str, hyper: Any) -> None:
    with Client(server_url) as client:
        plain, want, want_info = run(client, optimizer, None, 10, **hyper)
        for k in (2, 3):
            session, got, got_info = run(client, optimizer, k, 10, **hyper)
            info = session.info()
            assert len(info["shards"]) == k and session.version == 10
            split = [t["name"] for sh in info["shards"] for t in sh["tensors"]]
            assert split.count("emb") >= 2  # one tensor is split over shards
            for a, b in zip(got, want, strict=True):
                assert_bitwise(a, b)
            for a, b in zip(got_info, want_info, strict=True):
                assert (a.version, a.step, a.lr, a.grad_norm) == (
                    b.version, b.step, b.lr, b.grad_norm
                )  # fmt: skip
            assert_bitwise(session.params(), plain.params())
            assert {sh["version"] for sh in info["shards"]} == {10} and info["version"] == 10
            session.delete()
        plain.delete()


def test_a_refused_gradient_is_applied_on_no_shard(server_url: str) -> None:
    with Client(server_url) as client:
        params = make_params()
        session = client.create_session("adam", params, shards=3, check_finite=True, lr=0.1)
        session.step(make_grads(0, params))
        before = session.params()
        bad = make_grads(1, params)
        bad["w"][3, 4] = np.nan  # the last shard's tensor
        with pytest.raises(oc.InvalidTensorError):
            session.step(bad)
        bad = make_grads(1, params)
        bad["emb"][0, 0] = np.inf  # the first shard's piece
        with pytest.raises(oc.InvalidTensorError):
            session.step(bad)
        info = session.info()
        assert [sh["version"] for sh in info["shards"]] == [1, 1, 1]
        assert_bitwise(session.params(), before)
        session.step(make_grads(2, params))  # and the session goes on
        assert session.version == 2
        session.delete()


def test_concurrent_clients_leave_every_shard_at_one_version(server_url: str) -> None:
    params = make_params()
    with Client(server_url) as client:
        sid = client.create_session("sgd", params, shards=3, lr=0.01).id
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            with Client(server_url) as c:
                s = c.session(sid)
                for i in range(6):
                    s.step(make_grads(10 * w + i, params))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Client(server_url) as client:
        session = client.session(sid)
        info = session.info()
        assert [sh["version"] for sh in info["shards"]] == [12, 12, 12]
        got = session.params()
        total = {n: sum(make_grads(10 * w + i, params)[n] for w in range(2) for i in range(6))
                 for n in params}  # fmt: skip
        for n, p in params.items():
            assert got[n].shape == p.shape
            np.testing.assert_allclose(got[n], p - 0.01 * total[n], rtol=1e-5, atol=1e-5)
        # every shard session answers its own pieces at that version
        for sh in info["shards"]:
            part = client.session(sh["id"]).params()
            assert sorted(part) == sorted({t["name"] for t in sh["tensors"]})
        session.delete()


def test_params_reads_of_a_sharded_session(server_url: str) -> None:
    with Client(server_url, wire="json") as client:
        params = make_params()
        session = client.create_session("adam", params, shards=2, lr=0.01)
        assert_bitwise(session.params(), params)
        out = session.step(make_grads(0, params))
        got = session.params()
        assert_bitwise(got, out) and session.version == 1
        sub = session.params(names=["b", "emb"])
        assert sorted(sub) == ["b", "emb"] and sub["emb"].shape == (256, 300)
        assert_bitwise(session.params(min_version=1, wait=1.0), out)
        # a handle made without info learns the layout from its first step
        other = client.session(session.id)
        prev = other.step(make_grads(1, params))
        assert other.version == 2 and other._s.layout is not None
        # a subset of the tensors: the shards without any are prepared empty and commit too
        out = other.step({"w": make_grads(2, params)["w"]})
        assert sorted(out) == sorted(params) and np.array_equal(out["b"], prev["b"])
        assert {sh["version"] for sh in other.info()["shards"]} == {3}
        session.delete()


def test_async_client_sharded_equals_sync(server_url: str) -> None:
    async def go() -> list[dict[str, Any]]:
        async with AsyncClient(server_url) as client:
            params = make_params()
            s = await client.create_session("adam", params, shards=3, max_grad_norm=40.0, lr=0.01)
            outs = [await s.step(make_grads(i, params)) for i in range(4)]
            await s.delete()
            return outs

    got = asyncio.run(go())
    with Client(server_url) as client:
        params = make_params()
        s = client.create_session("adam", params, max_grad_norm=40.0, lr=0.01)
        want = [s.step(make_grads(i, params)) for i in range(4)]
        s.delete()
    for a, b in zip(got, want, strict=True):
        assert_bitwise(a, b)


@pytest.mark.skipif(find_spec("torch") is None, reason="needs the torch extra")
def test_torch_adapter_on_a_sharded_session(server_url: str) -> None:
    import torch

    from optd_client.torch import RemoteOptimizer

    results = []
    for shards in (None, 2):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(300, 256), torch.nn.Linear(256, 4))
        extra = {} if shards is None else {"shards": shards}
        opt = RemoteOptimizer(model.named_parameters(), server_url, "adam", lr=1e-2, **extra)
        x, y = torch.randn(16, 300, generator=torch.Generator().manual_seed(1)), torch.zeros(16, 4)
        assert (opt.session._s.layout is not None) == (shards is not None)
        for i in range(3):
            if i == 2:  # a PATCH of the session, carried to every shard by the server
                opt.param_groups[0]["lr"] = 5e-3
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
        opt.session.delete()
    for n in results[0]:
        assert torch.equal(results[0][n], results[1][n]), n


def test_two_api_processes_owners_per_shard() -> None:
    """Two processes on one Redis: the shards' owner is the process that served them
    first; a client of the other process is redirected per shard id and caches it, so
    every commit reaches the process holding its prepared part (bit-identical result)."""
    from conftest import start_redis, start_server

    redis, redis_url = start_redis()
    procs = [redis]
    try:
        urls = []
        for _ in range(2):
            proc, url = start_server({"OPTD_REDIS_URL": redis_url, "OPTD_OWNERS": "redirect"})
            procs.append(proc)
            urls.append(url)
        params = make_params()
        with Client(urls[0]) as a, Client(urls[1]) as b:
            s = a.create_session("adam", params, shards=3, max_grad_norm=40.0, lr=0.01)
            got = [s.step(make_grads(i, params)) for i in range(3)]
            other = b.session(s.id)
            other.info()
            got += [other.step(make_grads(i, params)) for i in range(3, 6)]
            for k in range(3):
                assert b._core.owners.owner(f"{s.id}-s{k}") is not None
            plain = a.create_session("adam", params, max_grad_norm=40.0, lr=0.01)
            want = [plain.step(make_grads(i, params)) for i in range(6)]
            for x, y in zip(got, want, strict=True):
                assert_bitwise(x, y)
            assert_bitwise(other.params(), plain.params())
    finally:
        for proc in procs:
            proc.stop()


def test_a_step_left_half_applied_by_a_dead_client_is_repaired(server_url: str) -> None:
    """A client commits shard 0 (with every token) and shard 2 of three, then dies; the
    next SDK step finds the shards apart, finishes that step from the session info's
    `repair`, and goes on: bit-identical to the unsharded session (DESIGN §3)."""
    import httpx
    from safetensors.numpy import save

    from optd_client import _shards

    params = make_params()
    with Client(server_url) as client:
        plain = client.create_session("adam", params, lr=1e-2, max_grad_norm=40.0)
        sharded = client.create_session("adam", params, lr=1e-2, max_grad_norm=40.0, shards=3)
        for s in (plain, sharded):
            s.step(make_grads(0, params))
        info = sharded.info()
        layout = _shards.layout_of(info)
        assert layout is not None and len(layout.shards) == 3
        with httpx.Client(base_url=server_url, timeout=30) as raw:
            answers = []
            parts = _shards.split(layout, make_grads(1, params))
            for shard, part in zip(layout.shards, parts, strict=True):
                r = raw.post(f"/v1/sessions/{shard.id}/prepare", content=save(part),
                             headers={"content-type": "application/x-safetensors"})  # fmt: skip
                assert r.status_code == 200, r.text
                answers.append(r.json())
            sumsq = [x for a in answers for x in a["sumsq"]]
            tokens = [a["prepared"] for a in answers]
            for k in (0, 2):  # shard 1's commit never comes
                body = {"prepared": tokens[k], "sumsq": sumsq, "loss": 1.0}
                if k == 0:
                    body["tokens"] = tokens
                r = raw.post(f"/v1/sessions/{layout.shards[k].id}/step", json=body,
                             headers={"if-match": '"1"'})  # fmt: skip
                assert r.status_code == 200, r.text
        got = sharded.step(make_grads(2, params))
        for i in (1, 2):
            want = plain.step(make_grads(i, params))
        assert_bitwise(want, got)
        assert [s["version"] for s in sharded.info()["shards"]] == [3, 3, 3]
        assert sharded.version == plain.version == 3
