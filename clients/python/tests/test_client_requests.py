"""Request shape and response parsing, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import numpy as np
import pytest
from mock_optd import URL, FakeOptd, step_reply, tensors
from safetensors.numpy import load

from optd_client import Client, StepInfo
from optd_client._wire import decode_safetensors

INFO = {"id": "s1", "version": 0, "hyperparams": {"lr": 0.1}}


def header_meta(body: bytes) -> dict[str, str]:
    n = int.from_bytes(body[:8], "little")
    meta: dict[str, str] = json.loads(body[8 : 8 + n]).get("__metadata__", {})
    return meta


def test_create_over_safetensors_routes_options() -> None:
    fake = FakeOptd(httpx.Response(201, json=INFO))
    session = fake.client(api_key="k1").create_session(
        "adam", {"w": np.ones((2, 3), np.float32), "b": 0.5},
        lr=0.1, betas=(0.9, 0.99), dtype="float64", labels={"p": "x"}, max_grad_norm=1.0,
    )  # fmt: skip
    req = fake.last
    assert (req.method, req.url.path) == ("POST", "/v1/sessions")
    assert req.headers["content-type"] == "application/x-safetensors"
    assert req.headers["authorization"] == "Bearer k1"
    uuid.UUID(req.headers["idempotency-key"])
    config = json.loads(header_meta(req.content)["config"])
    assert config == {
        "optimizer": "adam", "dtype": "float64", "labels": {"p": "x"}, "max_grad_norm": 1.0,
        "hyperparams": {"lr": 0.1, "betas": [0.9, 0.99]},
    }  # fmt: skip
    arrays = load(req.content)
    assert arrays["w"].shape == (2, 3) and arrays["w"].dtype == np.float32
    assert arrays["b"].shape == () and arrays["b"] == 0.5
    assert session.id == "s1" and session.version == 0


def test_create_over_json() -> None:
    fake = FakeOptd(httpx.Response(201, json=INFO))
    fake.client(wire="json").create_session("sgd", {"w": [1, 2]}, momentum=0.9)
    body = json.loads(fake.last.content)
    assert fake.last.headers["content-type"] == "application/json"
    assert body["params"] == {"w": {"shape": [2], "dtype": "float64", "data": [1.0, 2.0]}}
    assert body["hyperparams"] == {"momentum": 0.9} and body["optimizer"] == "sgd"


def test_step_safetensors_request_and_response() -> None:
    fake = FakeOptd(step_reply(7, w=np.array([1.0, 2.0], np.float32)))
    session = fake.client().session("s1", worker="w-default")
    params = session.step({"w": np.array([0.5, 0.25])}, base_version=6, loss=0.125)
    req = fake.last
    assert (req.method, req.url.path) == ("POST", "/v1/sessions/s1/step")
    assert req.headers["accept"] == "application/x-safetensors"
    assert req.headers["optd-base-version"] == "6"
    assert req.headers["optd-loss"] == "0.125"
    assert req.headers["optd-worker"] == "w-default"
    grads, meta = decode_safetensors(req.content)
    assert meta == {} and np.array_equal(grads["w"], [0.5, 0.25])
    assert np.array_equal(params["w"], [1.0, 2.0]) and params["w"].flags.writeable
    assert session.last == StepInfo(7, 7, 0.1, 1.5, None)
    assert session.version == 7


def test_step_worker_outside_latin1_goes_to_metadata() -> None:
    fake = FakeOptd(step_reply())
    fake.client().session("s1").step({"w": [0.0, 0.0]}, worker="wörker-π")
    assert "optd-worker" not in fake.last.headers
    assert header_meta(fake.last.content) == {"worker": "wörker-π"}


def test_step_json_wire() -> None:
    reply = {
        "version": 3, "step": 3, "lr": 0.01, "grad_norm": 2.0, "staleness": 1,
        "params": {"w": {"shape": [2], "dtype": "float32", "data": [1.5, 2.5]}},
    }  # fmt: skip
    fake = FakeOptd(
        httpx.Response(200, json=reply, headers={"idempotent-replayed": "true", "etag": '"3"'})
    )
    session = fake.client(wire="json").session("s1")
    params = session.step({"w": np.float32([1, 2])}, base_version=2, worker="w", loss=1.0)
    body = json.loads(fake.last.content)
    assert body == {
        "base_version": 2, "worker": "w", "loss": 1.0,
        "grads": {"w": {"shape": [2], "dtype": "float32", "data": [1.0, 2.0]}},
    }  # fmt: skip
    assert fake.last.headers["accept"] == "application/json"
    assert params["w"].dtype == np.float32 and params["w"].tolist() == [1.5, 2.5]
    assert session.last == StepInfo(3, 3, 0.01, 2.0, 1, replayed=True)


def test_params_query_and_long_poll_timeout() -> None:
    fake = FakeOptd(tensors({"a": np.zeros(1)}, version=9))
    session = fake.client(timeout=20.0).session("s/1")
    session.params(names=["a", "b.c"], min_version=9, wait=5)
    req = fake.last
    assert req.url.path == "/v1/sessions/s%2F1/params" or req.url.raw_path.startswith(
        b"/v1/sessions/s%2F1/params"
    )
    assert dict(req.url.params) == {"names": "a,b.c", "min_version": "9", "wait": "5.0"}
    assert req.extensions["timeout"]["read"] == 25.0
    assert session.version == 9


def test_set_params_update_delete_info() -> None:
    fake = FakeOptd(
        httpx.Response(200, json={"version": 4}),
        httpx.Response(200, json=INFO | {"version": 5}),
        httpx.Response(204),
        httpx.Response(200, json=INFO | {"version": 5}),
    )
    session = fake.client().session("s1")
    assert session.set_params({"w": np.ones(2)}, if_match=3) == 4
    assert fake.last.method == "PUT" and fake.last.headers["if-match"] == '"3"'
    assert np.array_equal(load(fake.last.content)["w"], [1.0, 1.0])
    session.update(lr=0.01, betas=(0.8, 0.9), max_grad_norm=None, labels={"a": "b"})
    assert fake.last.method == "PATCH" and json.loads(fake.last.content) == {
        "max_grad_norm": None, "labels": {"a": "b"},
        "hyperparams": {"lr": 0.01, "betas": [0.8, 0.9]},
    }  # fmt: skip
    assert session.version == 5
    session.delete()
    assert fake.last.method == "DELETE" and fake.last.url.path == "/v1/sessions/s1"
    assert session.info()["version"] == 5


def test_state_round_trip_keeps_meta_and_bits() -> None:
    meta = {"format": 1, "config": {"optimizer": "adam"}, "layout": [["w", [2], 0]], "steps": [3]}
    stored = {"param/w": np.float32([1, 2]), "exp_avg/w": np.float32([0.1, 0.2])}
    fake = FakeOptd(
        tensors(stored, version=3, optd=json.dumps(meta)),
        httpx.Response(201, json={"version": 0, "created": True}),
    )
    session = fake.client().session("s1")
    ckpt = session.state()
    assert ckpt.version == 3 and ckpt.meta == meta and ckpt.steps == {"w": 3}
    assert sorted(ckpt.slots) == ["exp_avg", "param"] and np.array_equal(ckpt.params["w"], [1, 2])
    assert session.load_state(ckpt) == 0
    req = fake.last
    assert (req.method, req.url.path) == ("PUT", "/v1/sessions/s1/state")
    arrays, sent_meta = decode_safetensors(req.content)
    assert json.loads(sent_meta["optd"]) == meta
    assert all(
        np.array_equal(arrays[k], v) and arrays[k].dtype == v.dtype for k, v in stored.items()
    )


def test_list_sessions_follows_the_cursor() -> None:
    pages = {
        None: {"sessions": [{"id": "a"}, {"id": "b"}], "next_cursor": "c1"},
        "c1": {"sessions": [], "next_cursor": "c2"},  # an empty page is not the end
        "c2": {"sessions": [{"id": "c"}], "next_cursor": None},
    }
    fake = FakeOptd(lambda r: httpx.Response(200, json=pages[r.url.params.get("cursor")]))
    ids = [
        s["id"] for s in fake.client().list_sessions(labels={"team": "x", "p": "q"}, page_size=2)
    ]
    assert ids == ["a", "b", "c"]
    assert len(fake.requests) == 3
    assert fake.requests[0].url.params.get_list("label") == ["team=x", "p=q"]
    assert fake.requests[0].url.params["limit"] == "2"


def test_env_url_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTD_URL", "http://env-host:9/")
    monkeypatch.setenv("OPTD_API_KEY", "secret")
    fake = FakeOptd(httpx.Response(200, json={"optimizers": []}))
    client = Client(transport=httpx.MockTransport(fake))
    client.optimizers()
    assert str(fake.last.url) == "http://env-host:9/v1/optimizers"
    assert fake.last.headers["authorization"] == "Bearer secret"
    monkeypatch.delenv("OPTD_API_KEY")
    Client(URL, transport=httpx.MockTransport(fake)).optimizers()
    assert "authorization" not in fake.last.headers


def test_sync_barrier_202_long_polls_for_the_next_version() -> None:
    fake = FakeOptd(
        httpx.Response(202, json={"barrier": {"version": 4, "have": 1, "need": 2}}),
        tensors({"w": np.zeros(2)}, version=4),  # the wait expired: still version 4
        tensors({"w": np.ones(2)}, version=5),
    )
    session = fake.client().session("s1", worker="w1")
    params = session.step({"w": np.ones(2)}, base_version=4, wait=0.5)
    assert fake.requests[0].url.params["wait"] == "0.5"
    assert fake.requests[0].headers["optd-worker"] == "w1"
    polls = fake.requests[1:]
    assert [r.url.path for r in polls] == ["/v1/sessions/s1/params"] * 2
    assert all(r.url.params["min_version"] == "5" for r in polls)
    assert all(float(r.url.params["wait"]) > 0 for r in polls)
    assert np.array_equal(params["w"], [1.0, 1.0])
    assert session.last == StepInfo(
        5, None, None, None, None, barrier={"version": 4, "have": 1, "need": 2}
    )


def test_sync_barrier_gives_up_after_barrier_timeout() -> None:
    from optd_client import BarrierTimeoutError

    fake = FakeOptd(
        httpx.Response(202, json={"barrier": {"version": 0, "have": 1, "need": 3}}),
        tensors({"w": np.zeros(2)}, version=0),
    )
    with pytest.raises(BarrierTimeoutError) as info:
        fake.client(barrier_timeout=0.0).session("s1").step({"w": np.ones(2)})
    assert info.value.problem["barrier"]["need"] == 3


def test_async_client_same_requests() -> None:
    fake = FakeOptd(
        httpx.Response(201, json=INFO),
        httpx.Response(202, json={"barrier": {"version": 0, "have": 1, "need": 2}}),
        tensors({"w": np.ones(2)}, version=1),
        lambda r: httpx.Response(200, json={"sessions": [{"id": "s1"}], "next_cursor": None}),
    )

    async def main() -> None:
        async with fake.async_client(api_key="k") as client:
            session = await client.create_session("adam", {"w": np.zeros(2)}, lr=0.5)
            params = await session.step({"w": np.ones(2)}, worker="a")
            assert np.array_equal(params["w"], [1.0, 1.0]) and session.version == 1
            assert [s["id"] async for s in client.list_sessions()] == ["s1"]

    asyncio.run(main())
    create, step = fake.requests[:2]
    assert json.loads(header_meta(create.content)["config"])["hyperparams"] == {"lr": 0.5}
    assert step.headers["optd-worker"] == "a" and step.headers["authorization"] == "Bearer k"
    assert fake.requests[2].url.params["min_version"] == "1"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="wire"):
        Client(URL, wire="xml")  # type: ignore[typeddict-item]
    fake = FakeOptd(step_reply())
    with pytest.raises(TypeError, match="float"):
        fake.client().session("s1").step({"w": np.array(["a"])})
    assert fake.requests == []
