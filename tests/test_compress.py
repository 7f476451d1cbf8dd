"""Fewer bytes on the wire (DESIGN §3, compressed tensors): bfloat16 parameters out
(`Optd-Response-Dtype`), bfloat16 and int8-block gradients in, against the golden
vectors of testdata/wire/compress.json. API tests run on both stores."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.codec import compress
from app.codec.safetensors import decode as st_decode
from app.codec.safetensors import encode as st_encode
from tests.fixtures_api import assert_problem, create

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "testdata" / "wire" / "compress.json").read_text())
ST = "application/x-safetensors"


def f32(hexstr: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexstr), "<f4")


def test_vectors_are_current(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "testdata"))
    sys.path.insert(0, str(ROOT / "clients" / "python"))
    import gen_compress_vectors

    assert gen_compress_vectors.build() == VECTORS


@pytest.mark.parametrize("case", VECTORS["bfloat16"], ids=lambda c: c["name"])
def test_bfloat16_rounds_to_nearest_even(case: dict[str, Any]) -> None:
    bits = compress.bfloat16_bits(f32(case["float32_hex"]))
    assert bits.astype("<u2").tobytes().hex() == case["bfloat16_hex"]


def test_bfloat16_agrees_with_torch() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 100
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(compress.bfloat16_bits(x), want)


def int8_body(case: dict[str, Any], name: str = "w") -> bytes:
    q = np.frombuffer(bytes.fromhex(case["int8_hex"]), "i1").reshape(case["shape"])
    scale = f32(case["scale_hex"])
    meta = {"optd.quant": "int8-block", "optd.block": str(case["block"])}
    return st_encode({f"{name}.__scale__": scale, name: q.astype(np.int32)}, meta).replace(
        b'"I32"', b'"I8" '
    )


@pytest.mark.parametrize("case", VECTORS["int8_block"], ids=lambda c: c["name"])
def test_int8_block_dequantizes_to_the_vectors(case: dict[str, Any]) -> None:
    q = np.frombuffer(bytes.fromhex(case["int8_hex"]), "i1").reshape(case["shape"])
    tensors = {"w": q, "w.__scale__": f32(case["scale_hex"])}
    meta = {"optd.quant": "int8-block", "optd.block": str(case["block"])}
    out = compress.dequantize(tensors, meta)["w"]
    assert out.dtype == np.float32 and list(out.shape) == case["shape"]
    assert out.reshape(-1).tobytes().hex() == case["dequantized_hex"]
    # and it is close to what was quantized: within half a step of each block
    x = f32(case["float32_hex"])
    block = case["block"]
    step = np.repeat(f32(case["scale_hex"]), block)[: x.size]
    assert np.all(np.abs(out.reshape(-1) - x) <= step / 2 * 1.0001 + 1e-45)


def i8_file(tensors: dict[str, np.ndarray], meta: dict[str, str] | None) -> bytes:
    """A safetensors body with int8 tensors (our encoder writes no I8: patch the header)."""
    header: dict[str, Any] = {"__metadata__": meta} if meta else {}
    data, off = b"", 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        code = {"i": "I8", "f": "F32"}[arr.dtype.kind] if arr.dtype.itemsize in (1, 4) else "F64"
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [off, off + len(raw)],
        }
        data, off = data + raw, off + len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def sgd_session(client: TestClient, n: int) -> str:
    return create(client, {"w": np.zeros(n, np.float32)}, optimizer="sgd", hyperparams={"lr": 1.0})


def test_step_takes_int8_block_and_answers_bfloat16(client: TestClient) -> None:
    case = next(c for c in VECTORS["int8_block"] if c["name"] == "block_256")
    sid = sgd_session(client, 600)
    q = np.frombuffer(bytes.fromhex(case["int8_hex"]), "i1")
    body = i8_file(
        {"w.__scale__": f32(case["scale_hex"]), "w": q},
        {"optd.quant": "int8-block", "optd.block": "256"},
    )
    r = client.post(
        f"/v1/sessions/{sid}/step",
        content=body,
        headers={"content-type": ST, "accept": ST, "optd-response-dtype": "bfloat16"},
    )
    assert r.status_code == 200, r.text
    assert "Optd-Response-Dtype" in r.headers["vary"]
    tensors, _ = st_decode(r.content)
    assert r.content.count(b'"BF16"') == 1
    want = -f32(case["dequantized_hex"])  # sgd lr 1 from zeros
    assert np.array_equal(tensors["w"], compress.bfloat16_round(want))
    # the state keeps float32: the exact values come back without the header
    r = client.get(f"/v1/sessions/{sid}/params", headers={"accept": ST})
    assert np.array_equal(st_decode(r.content)[0]["w"], want)
    # JSON answers name bfloat16 and carry the rounded values
    r = client.get(f"/v1/sessions/{sid}/params", headers={"optd-response-dtype": "bfloat16"})
    doc = r.json()["params"]["w"]
    assert doc["dtype"] == "bfloat16"
    assert np.array_equal(np.asarray(doc["data"], np.float32), compress.bfloat16_round(want))


def test_bfloat16_gradients_in_json_and_safetensors(client: TestClient) -> None:
    case = VECTORS["bfloat16"][-1]
    rounded = compress.bfloat16_round(f32(case["float32_hex"]))
    sid = sgd_session(client, rounded.size)
    r = client.post(
        f"/v1/sessions/{sid}/step",
        json={
            "grads": {"w": {"shape": [rounded.size], "dtype": "bfloat16", "data": rounded.tolist()}}
        },
    )
    assert r.status_code == 200, r.text
    bits = bytes.fromhex(case["bfloat16_hex"])
    header = {"w": {"dtype": "BF16", "shape": [rounded.size], "data_offsets": [0, len(bits)]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    r = client.post(
        f"/v1/sessions/{sid}/step",
        content=struct.pack("<Q", len(text)) + text + bits,
        headers={"content-type": ST},
    )
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["params"]["w"]["data"], np.float32)
    assert np.array_equal(got, -2 * rounded)


BAD = {
    "no_metadata": ({"w": np.zeros(4, "i1")}, None, 422),
    "unknown_quant": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.ones(1, "f4")},
        {"optd.quant": "int4"},
        400,
    ),
    "no_block": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.ones(1, "f4")},
        {"optd.quant": "int8-block"},
        400,
    ),
    "block_zero": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.ones(1, "f4")},
        {"optd.quant": "int8-block", "optd.block": "0"},
        400,
    ),
    "block_text": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.ones(1, "f4")},
        {"optd.quant": "int8-block", "optd.block": "4.0"},
        400,
    ),
    "no_scale": ({"w": np.zeros(4, "i1")}, {"optd.quant": "int8-block", "optd.block": "4"}, 422),
    "wrong_block_count": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.ones(2, "f4")},
        {"optd.quant": "int8-block", "optd.block": "4"},
        422,
    ),
    "scale_not_finite": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.array([np.inf], "f4")},
        {"optd.quant": "int8-block", "optd.block": "4"},
        422,
    ),
    "scale_negative": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.array([-1], "f4")},
        {"optd.quant": "int8-block", "optd.block": "4"},
        422,
    ),
    "scale_f64": (
        {"w": np.zeros(4, "i1"), "w.__scale__": np.ones(1, "f8")},
        {"optd.quant": "int8-block", "optd.block": "4"},
        422,
    ),
    "minus_128": (
        {"w": np.array([-128, 0, 0, 0], "i1"), "w.__scale__": np.ones(1, "f4")},
        {"optd.quant": "int8-block", "optd.block": "4"},
        422,
    ),
    "orphan_scale": (
        {"w": np.zeros(4, "f4"), "w.__scale__": np.ones(1, "f4")},
        {"optd.quant": "int8-block", "optd.block": "4"},
        422,
    ),
}


@pytest.mark.parametrize("why", sorted(BAD))
def test_bad_int8_bodies_are_problems(client: TestClient, why: str) -> None:
    tensors, meta, status = BAD[why]
    sid = sgd_session(client, 4)
    r = client.post(
        f"/v1/sessions/{sid}/step", content=i8_file(tensors, meta), headers={"content-type": ST}
    )
    assert_problem(r, status)
    r = client.get(f"/v1/sessions/{sid}")
    assert r.json()["version"] == 0


def test_i8_is_refused_outside_steps_and_bad_response_dtype(client: TestClient) -> None:
    sid = sgd_session(client, 4)
    body = i8_file({"w": np.zeros(4, "i1")}, None)
    r = client.put(f"/v1/sessions/{sid}/params", content=body, headers={"content-type": ST})
    assert_problem(r, 422, "invalid-tensor")
    r = client.post(
        f"/v1/sessions/{sid}/step",
        json={"grads": {"w": [0.0] * 4}},
        headers={"optd-response-dtype": "int8"},
    )
    assert_problem(r, 400, "invalid-body")
    r = client.get(f"/v1/sessions/{sid}/params", headers={"optd-response-dtype": "float16"})
    assert_problem(r, 400)
