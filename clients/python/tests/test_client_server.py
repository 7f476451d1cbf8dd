"""The client against a real `optd serve`, on the embedded store and on Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import numpy as np
import pytest

import optd_client as oc
from optd_client import AsyncClient, Client

Wire = Literal["safetensors", "json"]


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url, retries=2, backoff=0.01) as c:
        yield c


@pytest.mark.parametrize("wire", ["safetensors", "json"])
def test_train_linear_regression(server_url: str, wire: Wire) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3
    with Client(server_url, wire=wire) as client:
        session = client.create_session("adam", {"w": np.zeros(3), "b": 0.0}, lr=0.1)
        w, b = np.zeros(3), 0.0
        for _ in range(150):
            err = x @ w + b - y
            grads = {"w": 2 * x.T @ err / len(y), "b": 2 * err.mean()}
            params = session.step(grads, loss=float((err**2).mean()))
            w, b = params["w"].astype(np.float64), float(params["b"])
        assert float(np.mean((x @ w + b - y) ** 2)) < 1e-2
        assert session.last is not None and session.last.version == 150
        assert session.last.step == 150 and session.last.lr == pytest.approx(0.1)
        info = session.info()
        assert info["step"] == 150 and info["last_loss"] is not None
        session.delete()


def test_session_lifecycle(client: Client) -> None:
    label = uuid.uuid4().hex
    params = {
        "layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "layer.bias": [0.5, 0.5],
    }
    session = client.create_session(
        "adamw", params, lr=0.01, labels={"run": label}, dtype="float64"
    )
    info = session.info()
    assert info["hyperparams"]["weight_decay"] == 0.01 and info["dtype"] == "float64"
    assert info["params"]["layer.weight"] == {"shape": [2, 3], "step": 0}
    got = session.params(names=["layer.bias"])
    assert list(got) == ["layer.bias"] and got["layer.bias"].dtype == np.float64
    session.step({"layer.bias": [1.0, -1.0]})  # a subset: only the bias steps
    assert session.info()["params"]["layer.weight"]["step"] == 0
    assert session.set_params({"layer.weight": np.ones((2, 3))}, if_match=1) == 2
    assert np.array_equal(session.params()["layer.weight"], np.ones((2, 3)))
    assert session.update(lr=0.5, max_grad_norm=1.0)["hyperparams"]["lr"] == 0.5
    assert session.info()["max_grad_norm"] == 1.0 and session.version == 3
    other = client.create_session("sgd", {"w": [0.0]}, labels={"run": label})
    ids = {s["id"] for s in client.list_sessions(labels={"run": label}, page_size=1)}
    assert ids == {session.id, other.id}
    for s in (session, other):
        s.delete()
    with pytest.raises(oc.NotFoundError):
        session.info()
    assert not list(client.list_sessions(labels={"run": label}))


@pytest.mark.parametrize("wire", ["safetensors", "json"])
def test_checkpoint_restores_bit_identically(server_url: str, wire: Wire) -> None:
    rng = np.random.default_rng(1)
    grads = [{"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)} for _ in range(6)]
    with Client(server_url, wire=wire) as client:
        first = client.create_session(
            "adam", {"w": np.ones((3, 4)), "b": np.zeros(4)}, amsgrad=True
        )
        for g in grads[:3]:
            first.step(g)
        ckpt = first.state()
        assert ckpt.version == 3 and ckpt.steps == {"w": 3, "b": 3}
        assert sorted(ckpt.slots) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "param"]
        second = client.session("restored-" + uuid.uuid4().hex)
        assert second.load_state(ckpt) == 0  # created under that id
        restored = second.state()
        assert all(np.array_equal(restored.tensors[k], v) for k, v in ckpt.tensors.items())
        for g in grads[3:]:
            a, b = first.step(g), second.step(g)
            assert all(np.array_equal(a[k], b[k]) for k in a)
        assert second.load_state(ckpt, if_match=3) == 4  # restore into an existing session
        first.delete()
        second.delete()


def test_server_errors_map_to_classes(client: Client) -> None:
    with pytest.raises(oc.NotFoundError):
        client.session("no-such-session").step({"w": [1.0]})
    with pytest.raises(oc.InvalidConfigError):
        client.create_session("adamm", {"w": [1.0]})
    session = client.create_session("adam", {"w": [1.0, 2.0]}, max_staleness=1)
    with pytest.raises(oc.InvalidTensorError):
        session.step({"nope": [1.0]})
    with pytest.raises(oc.InvalidTensorError):
        session.step({"w": [1.0, float("nan")]})
    for _ in range(3):
        session.step({"w": [1.0, 1.0]})
    with pytest.raises(oc.StaleGradientError) as stale:
        session.step({"w": [1.0, 1.0]}, base_version=0)
    assert stale.value.current_version == 3
    # base_version ahead; retries=0 as the server currently answers it with retry_after
    with Client(client.url, retries=0) as once, pytest.raises(oc.ConflictError):
        once.session(session.id).step({"w": [1.0, 1.0]}, base_version=99)
    with pytest.raises(oc.PreconditionFailedError):
        session.set_params({"w": [0.0, 0.0]}, if_match=0)
    with pytest.raises(oc.InvalidBodyError):
        session.params(wait=-1)
    session.delete()


class LoseFirstStepResponse(httpx.BaseTransport):
    """The step reaches the server and is applied, but its response is lost."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/step") and not self.lost:
            response.read()
            response.close()
            self.lost += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_retried_step_is_applied_once(server_url: str) -> None:
    transport = LoseFirstStepResponse()
    with Client(server_url, transport=transport, backoff=0.0) as client:
        session = client.create_session("sgd", {"w": np.zeros(2)}, lr=1.0)
        params = session.step({"w": [1.0, 2.0]})
        assert transport.lost == 1
        assert session.last is not None and session.last.replayed and session.last.version == 1
        assert params["w"].tolist() == [-1.0, -2.0]
        assert session.info()["step"] == 1
        session.delete()


def test_long_poll_returns_current_version_when_wait_expires(client: Client) -> None:
    session = client.create_session("adam", {"w": [0.0]})
    session.params(min_version=1, wait=0.2)
    assert session.version == 0
    session.step({"w": [1.0]})
    session.params(min_version=1, wait=5)
    assert session.version == 1
    session.delete()


def test_async_client_against_server(server_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(server_url) as client:
            label = uuid.uuid4().hex
            session = await client.create_session(
                "adam", {"w": np.zeros(2)}, lr=0.1, labels={"a": label}
            )
            params = await session.step({"w": np.ones(2)}, loss=0.5)
            assert np.allclose(params["w"], -0.1) and session.version == 1
            assert [s["id"] async for s in client.list_sessions(labels={"a": label})] == [
                session.id
            ]
            ckpt = await session.state()
            assert ckpt.steps == {"w": 1}
            await session.delete()
            with pytest.raises(oc.NotFoundError):
                await session.info()

    asyncio.run(main())


def test_wires_agree_bitwise(server_url: str) -> None:
    grads = {"w": np.random.default_rng(2).standard_normal(5).astype(np.float32)}
    results = []
    wires: list[Wire] = ["safetensors", "json"]
    for wire in wires:
        with Client(server_url, wire=wire) as client:
            session = client.create_session("adam", {"w": np.ones(5, np.float32)}, lr=0.01)
            results.append(session.step(grads)["w"])
            session.delete()
    assert results[0].dtype == results[1].dtype == np.float32
    assert np.array_equal(results[0], results[1])


def test_sync_mode_round_and_202_pickup(client: Client) -> None:
    session = client.create_session("sgd", {"w": np.zeros(2)}, lr=1.0, mode="sync", workers=2)
    a = client.session(session.id, worker="a")
    b = client.session(session.id, worker="b")
    with ThreadPoolExecutor(1) as pool:
        # a's request gives up on the round after 0.2 s (202) and long-polls for it
        pending = pool.submit(a.step, {"w": [1.0, 3.0]}, wait=0.2)
        time.sleep(0.5)
        got_b = b.step({"w": [3.0, 1.0]}, wait=10)
        got_a = pending.result(timeout=30)
    assert got_a["w"].tolist() == got_b["w"].tolist() == [-2.0, -2.0]  # the mean, applied once
    assert a.last is not None and a.last.barrier is not None
    assert {k: a.last.barrier[k] for k in ("version", "have", "need")} == {
        "version": 0,
        "have": 1,
        "need": 2,
    }
    assert a.last.barrier["contributors"] == ["a"]
    assert a.last.version == 1 and b.last is not None and b.last.step == 1
    session.delete()


def test_elastic_round_membership(client: Client) -> None:
    session = client.create_session(
        "sgd", {"w": np.zeros(2)}, lr=1.0, mode="sync", workers=2, min_workers=1,
        worker_lease_s=60,
    )  # fmt: skip
    a = client.session(session.id, worker="a")
    b = client.session(session.id, worker="b")
    assert a.join()["version"] == 0 and b.join()["lease_s"] == 60
    assert [w["worker"] for w in a.workers()["workers"]] == ["a", "b"]
    b.leave()  # a is then the only live member: its gradient closes the round alone
    p = a.step({"w": [1.0, 3.0]})
    assert a.last is not None and a.last.version == 1
    assert np.array_equal(p["w"], [-1.0, -3.0])
    assert [w["worker"] for w in a.workers()["workers"]] == ["a"]
