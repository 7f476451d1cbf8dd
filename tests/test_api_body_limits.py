"""Body limits and reading (app/api/transport.py, issue #16 item 1): JSON has its own,
smaller limit (OPTD_MAX_JSON_MB) with a 413 that points to safetensors; safetensors keeps
OPTD_MAX_BODY_MB; bodies are read whole and exactly, however they arrive."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save
from starlette.requests import Request

from app.api.transport import read_body
from app.codec import json_numbers
from app.core.config import Settings
from app.problems import TooLarge
from tests.fixtures_api import assert_problem, create, decode
from tests.helpers import run

memory_only = pytest.mark.parametrize("store_kind", ["memory"])  # limits do not touch the store

ST = "application/x-safetensors"
N = 300_000  # ~3.5 MiB of JSON, 1.2 MB of safetensors


def step_bodies(sid_params: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    g = {k: np.full(v.shape, 0.25, dtype=np.float32) for k, v in sid_params.items()}
    as_json = orjson.dumps(
        {"grads": {k: {"shape": list(v.shape), "data": v.ravel()} for k, v in g.items()}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return as_json, st_save(g)


@memory_only
def test_json_has_its_own_limit(make_client: Any) -> None:
    client: TestClient = make_client(max_json_mb=1, max_body_mb=4)
    params = {"w": np.zeros((300, 1000), dtype=np.float32)}
    r = client.post("/v1/sessions", content=st_save(params), headers={"content-type": ST})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    as_json, as_st = step_bodies(params)
    assert 2**20 < len(as_json) < 4 * 2**20 and len(as_st) < 2 * 2**20
    r = client.post(f"/v1/sessions/{sid}/step", content=as_json)
    problem = assert_problem(r, 413, "too-large")
    assert "OPTD_MAX_JSON_MB (1 MiB)" in problem["detail"]
    assert "application/x-safetensors" in problem["detail"]
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 0
    # the same gradients as safetensors are within OPTD_MAX_BODY_MB
    r = client.post(f"/v1/sessions/{sid}/step", content=as_st, headers={"content-type": ST})
    assert r.status_code == 200, r.text
    # without a Content-Length (chunked) the JSON limit holds while reading
    chunks = (as_json[i : i + 65536] for i in range(0, len(as_json), 65536))
    r = client.post(f"/v1/sessions/{sid}/step", content=chunks)
    assert_problem(r, 413, "too-large")
    # the session creation and PUT routes share it
    r = client.put(f"/v1/sessions/{sid}/params", content=as_json.replace(b"grads", b"params"))
    assert_problem(r, 413, "too-large")
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 1


@memory_only
def test_the_smaller_limit_wins_and_safetensors_keeps_the_body_limit(make_client: Any) -> None:
    client: TestClient = make_client(max_json_mb=64, max_body_mb=1)
    params = {"w": np.zeros((300, 1000), dtype=np.float32)}
    r = client.post("/v1/sessions", content=st_save(params), headers={"content-type": ST})
    problem = assert_problem(r, 413, "too-large")
    assert "OPTD_MAX_BODY_MB (1 MiB)" in problem["detail"]
    as_json, _ = step_bodies(params)
    r = client.post("/v1/sessions", content=as_json.replace(b"grads", b"params"))
    assert "OPTD_MAX_BODY_MB (1 MiB)" in assert_problem(r, 413, "too-large")["detail"]
    # an unsupported Content-Type is still a 415 when it is small
    r = client.post("/v1/sessions", content=b"x", headers={"content-type": "text/csv"})
    assert_problem(r, 415, "unsupported-media-type")


def test_default_json_limit() -> None:
    assert Settings().max_json_mb == 64 and Settings().max_body_mb == 512


@memory_only
def test_large_json_step_is_exact(make_client: Any) -> None:
    """A JSON step big enough for the fast parser gives what the same safetensors step
    gives, bit for bit (float64 session: the values are not rounded on the way)."""
    client: TestClient = make_client()
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((400, 500)), "b": rng.standard_normal(500)}
    grads = {"w": rng.standard_normal((400, 500)), "b": rng.standard_normal(500)}
    sids = [create(client, params, dtype="float64", optimizer="adam") for _ in range(2)]
    body = orjson.dumps(
        {"grads": {"w": {"shape": [400, 500], "data": grads["w"]}, "b": grads["b"]}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert len(body) > json_numbers.MIN_BODY
    r1 = client.post(f"/v1/sessions/{sids[0]}/step", content=body)
    r2 = client.post(
        f"/v1/sessions/{sids[1]}/step", content=st_save(grads), headers={"content-type": ST}
    )
    assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
    got1, got2 = decode(r1.json()["params"]), decode(r2.json()["params"])
    for name in params:
        assert got1[name].tobytes() == got2[name].tobytes()


class _Counter:
    def __init__(self) -> None:
        self.total = 0

    def inc(self, n: int) -> None:
        self.total += n


def _request(chunks: list[bytes], declared: int | None, ctype: str = ST) -> Request:
    headers = [(b"content-type", ctype.encode())]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    app = SimpleNamespace(state=SimpleNamespace(metrics=SimpleNamespace(bytes_in=_Counter())))
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "app": app}
    messages: Iterator[dict[str, Any]] = iter(
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
         for i, c in enumerate(chunks)] or [{"type": "http.request", "body": b""}]
    )  # fmt: skip

    async def receive() -> dict[str, Any]:
        return next(messages)

    return Request(scope, receive)


@pytest.mark.parametrize("declared", ["exact", "none", "more"])
def test_read_body_is_exact_however_it_arrives(declared: str) -> None:
    rng = np.random.default_rng(0)
    settings = Settings(max_body_mb=8)
    for total in (0, 1, 1000, (1 << 20) + 7, 3 * (1 << 20) + 5):
        data = rng.integers(0, 256, total, dtype=np.uint8).tobytes()
        cuts = sorted(rng.integers(0, total + 1, 6).tolist()) if total else []
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
        size = {"exact": total, "none": None, "more": total + 12345}[declared]
        req = _request(chunks, size)
        assert run(read_body(req, settings)) == data
        assert req.app.state.metrics.bytes_in.total == total


def test_a_declared_length_is_not_allocated_ahead_of_the_data() -> None:
    """A client that declares 400 MiB and sends 10 bytes costs ~nothing."""
    req = _request([b"0123456789"], 400 * 2**20)
    tracemalloc.start()
    try:
        assert run(read_body(req, Settings())) == b"0123456789"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    req = _request([b"{}"], 65 * 2**20, ctype="application/json")
    with pytest.raises(TooLarge, match="OPTD_MAX_JSON_MB"):
        run(read_body(req, Settings()))
