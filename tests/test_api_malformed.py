"""A sweep of malformed input over every endpoint: always a 4xx problem, never a 500,
and the session is exactly as it was (version, params, optimizer state)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save

from tests.fixtures_api import assert_problem, create

ST = "application/x-safetensors"
P = {"w": np.ones((2, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}


def st_raw(header: object, data: bytes = b"", hlen: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def both(t: object) -> bytes:
    """One bad tensor as a step's grads and as a new session's or PUT's params."""
    return json.dumps({"grads": {"b": t}, "params": {"b": t}}).encode()


GOOD_ST = st_save(P)
BAD_SAFETENSORS = [
    b"",
    b"\x01\x02",
    GOOD_ST[:-3],  # truncated data
    GOOD_ST[:12],  # truncated header
    st_raw({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, hlen=10**6),
    struct.pack("<Q", 2**63) + b"{}",
    st_raw("not an object"),
    struct.pack("<Q", 5) + b"{nope",
    struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc",
    st_raw({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 32]}}, b"\0" * 16),
    st_raw({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [4, 20]}}, b"\0" * 20),
    st_raw(
        {
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        },
        b"\0" * 16,
    ),
    st_raw({"w": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4),
    st_raw({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, b"\0" * 16),
    st_raw({"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}}, b"\0" * 16),
    st_raw({"w": {"dtype": "F32", "shape": "2x2", "data_offsets": [0, 16]}}, b"\0" * 16),
    st_raw({"w": {"dtype": "F32", "shape": [2, 2]}}, b"\0" * 16),
    st_raw(
        {"__metadata__": {"loss": 3}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
        b"\0" * 8,
    ),
    st_save({"w": np.full((2, 2), np.nan, dtype=np.float32)}),
    st_save({"b": np.array([1e300, 1.0])}),  # overflows float32 state
]
# Well-formed, but wrong for the existing session (fine as a new session's params).
WRONG_FOR_SESSION = [
    st_save({"w": np.ones((3, 3), dtype=np.float32)}),
    st_save({"nope": np.ones(2, dtype=np.float32)}),
]
BAD_JSON = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"42",
    b"\xff\xfe",
    b"[" * 5000 + b"]" * 5000,
    b'{"grads": 5, "params": 5, "tensors": 5}',
    b'{"grads": {"w": "x"}, "params": {"w": "x"}}',
    b'{"grads": {"w": {"shape": [2], "data": [1]}}, "params": {"w": {"shape": [2], "data": [1]}}}',
    b'{"grads": {"w": {"shape": [-1], "data": []}}, "params": {"w": {"shape": [-1], "data": []}}}',
    b'{"grads": {"w": [[1, 2], [3]]}, "params": {"w": [[1, 2], [3]]}}',
    b'{"grads": {"b": [NaN, 1]}, "params": {"b": [NaN, 1]}}',
    b'{"grads": {"b": [1e999, 1]}, "params": {"b": [1e999, 1]}}',
    b'{"grads": {"b": [1e300, 1]}, "params": {"b": [1e300, 1]}}',
    both({"dtype": "int8", "shape": [2], "data": [1, 2]}),
    b'{"grads": {"b": [true, false]}, "params": {"b": [true, false]}}',
    b'{"grads": {"b": ["1", "2"]}, "params": {"b": ["1", "2"]}}',
    b'{"grads": {"": [1, 2]}, "params": {"": [1, 2]}}',
    both({"shape": [2**40, 2**40], "data": []}),
    b'{"grads": {"b": [1, 2]}, "base_version": "x", "params": {"b": [1, 2]}, "optimizer": 5}',
    b'{"grads": {"b": [1, 2]}, "loss": [1], "hyperparams": {"lr": "fast"}}',
    b'{"grads": {}, "params": {}, "hyperparams": {"lr": -1}}',
    ('{"grads": {"' + "x" * 600 + '": [1]}, "params": {"' + "x" * 600 + '": [1]}}').encode(),
]


def snapshot(client: TestClient, sid: str) -> object:
    r = client.get(f"/v1/sessions/{sid}/state")
    assert r.status_code == 200
    return r.json()


@pytest.mark.parametrize("endpoint", ["create", "step", "put_params", "put_state", "patch"])
def test_sweep(client: TestClient, endpoint: str) -> None:
    sid = create(client, P, optimizer="adam")
    client.post(f"/v1/sessions/{sid}/step", json={"grads": {"b": [0.5, 0.5]}})
    before = snapshot(client, sid)
    method, path = {
        "create": ("POST", "/v1/sessions"),
        "step": ("POST", f"/v1/sessions/{sid}/step"),
        "put_params": ("PUT", f"/v1/sessions/{sid}/params"),
        "put_state": ("PUT", f"/v1/sessions/{sid}/state"),
        "patch": ("PATCH", f"/v1/sessions/{sid}"),
    }[endpoint]
    bodies = [(b, "application/json") for b in BAD_JSON]
    if endpoint != "patch":
        bodies += [(b, ST) for b in BAD_SAFETENSORS]
    if endpoint not in ("patch", "create"):
        bodies += [(b, ST) for b in WRONG_FOR_SESSION]
    for body, ctype in bodies:
        r = client.request(method, path, content=body, headers={"content-type": ctype})
        assert 400 <= r.status_code < 500, (endpoint, body[:80], r.status_code, r.text)
        assert_problem(r, r.status_code)
    assert snapshot(client, sid) == before
    listing = client.get("/v1/sessions").json()["sessions"]
    assert [s["id"] for s in listing] == [sid]  # no half-created session either


def test_transport_errors(client: TestClient) -> None:
    sid = create(client, P)
    before = snapshot(client, sid)
    step = f"/v1/sessions/{sid}/step"
    ok = b'{"grads": {"b": [1, 2]}}'
    cases = [
        (
            client.post(step, content=ok, headers={"content-type": "text/csv"}),
            415,
            "unsupported-media-type",
        ),
        (
            client.post(
                step,
                content=ok,
                headers={"content-type": "application/json", "accept": "image/png"},
            ),
            406,
            "not-acceptable",
        ),
        (
            client.post(
                step, content=ok, headers={"content-type": "application/json", "if-match": "abc"}
            ),
            400,
            "invalid-body",
        ),
        (
            client.post(
                step + "?return=some", content=ok, headers={"content-type": "application/json"}
            ),
            400,
            "invalid-body",
        ),
        (
            client.post(
                step,
                content=ok,
                headers={"content-type": "application/json", "idempotency-key": "x" * 300},
            ),
            400,
            "invalid-body",
        ),
        (
            client.post(
                "/v1/sessions/no-such/step",
                content=ok,
                headers={"content-type": "application/json"},
            ),
            404,
            "not-found",
        ),
        (
            client.post(
                "/v1/sessions/bad%20id!/step",
                content=ok,
                headers={"content-type": "application/json"},
            ),
            404,
            "not-found",
        ),
        (client.get("/v1/sessions?limit=0"), 400, "invalid-body"),
        (client.get("/v1/sessions?cursor=%%%"), 400, "invalid-body"),
        (client.get("/v1/sessions?label=novalue"), 400, "invalid-body"),
        (client.get(f"/v1/sessions/{sid}/params?min_version=x"), 400, "invalid-body"),
        (client.get("/v1/nothing-here"), 404, "not-found"),
        (client.put("/v1/sessions/bad%20id!/state", json={}), 404, "not-found"),
    ]
    for r, status, slug in cases:
        assert_problem(r, status, slug)
    assert snapshot(client, sid) == before


def test_body_limit(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_body_mb=0.001)
    sid = create(client, {"b": np.zeros(2, dtype=np.float32)})
    big = st_save({"b": np.zeros(2, dtype=np.float32), "pad": np.zeros(1000, dtype=np.float32)})
    r = client.post(f"/v1/sessions/{sid}/step", content=big, headers={"content-type": ST})
    assert_problem(r, 413, "too-large")
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 0
