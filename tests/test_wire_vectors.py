"""The shared wire vectors in testdata/wire/ still describe this server, byte for byte.

The same files are read by the TypeScript and Go SDK tests, so a change here that
makes these tests fail is a wire change: regenerate with
`python testdata/gen_wire_vectors.py` and make the SDK tests pass again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.codec import safetensors
from app.codec.compress import bfloat16_bits
from app.problems import ALL_PROBLEMS, Problem
from testdata import gen_wire_vectors as gen

WIRE = Path(__file__).resolve().parent.parent / "testdata" / "wire"
MANIFEST = json.loads((WIRE / "safetensors" / "manifest.json").read_text("utf-8"))
EXCHANGES = json.loads((WIRE / "exchanges.json").read_text("utf-8"))
NUMPY = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def _golden(name: str) -> bytes:
    return (WIRE / "safetensors" / name).read_bytes()


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_decode_golden(name: str) -> None:
    entry = MANIFEST["files"][name]
    tensors, metadata = safetensors.decode(_golden(name))
    assert list(tensors) == [t["name"] for t in entry["tensors"]]
    assert metadata == dict(entry["metadata"] or [])
    for t in entry["tensors"]:
        arr = tensors[t["name"]]
        assert list(arr.shape) == t["shape"]
        assert arr.dtype == (np.float32 if t["dtype"] == "BF16" else NUMPY[t["dtype"]])
        # exact, including the sign of zero
        assert arr.reshape(-1).astype(np.float64).tobytes() == np.array(t["values"]).tobytes()
        if t["dtype"] != "BF16":
            assert arr.tobytes() == bytes.fromhex(t["hex"])


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_encode_golden(name: str) -> None:
    entry = MANIFEST["files"][name]
    tensors = {  # BF16 is written from its bits (Optd-Response-Dtype: bfloat16 answers)
        t["name"]: (
            bfloat16_bits(np.array(t["values"], dtype=np.float32))
            if t["dtype"] == "BF16"
            else np.array(t["values"], dtype=NUMPY[t["dtype"]])
        ).reshape(t["shape"])
        for t in entry["tensors"]
    }
    meta = None if entry["metadata"] is None else dict(entry["metadata"])
    assert safetensors.encode(tensors, meta) == _golden(name)


def test_bf16_bits() -> None:
    """BF16 files hold the bits the manifest names."""
    for entry in MANIFEST["files"].values():
        for t in entry["tensors"]:
            if t["dtype"] == "BF16":
                bits = np.array(t["values"], dtype=np.float32).view(np.uint32) >> 16
                assert bits.astype("<u2").tobytes() == bytes.fromhex(t["hex"])


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_invalid_golden(name: str) -> None:
    with pytest.raises(Problem) as info:
        safetensors.decode(_golden(name))
    assert info.value.slug == MANIFEST["invalid"][name]["problem"]


def test_problems() -> None:
    recorded = json.loads((WIRE / "problems.json").read_text("utf-8"))
    assert list(recorded) == [cls.slug for cls in ALL_PROBLEMS]
    assert recorded == gen.problems()


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_exchanges_replay(store: str, request: pytest.FixtureRequest) -> None:
    """Every recorded request, replayed against a fresh app, gets the recorded answer."""
    redis_url = request.getfixturevalue("redis_proc").url if store == "redis" else None
    assert EXCHANGES["settings"] == gen.SETTINGS
    recorded = EXCHANGES["exchanges"]
    bodies: dict[str, bytes] = {}
    for ex in recorded:
        if "file" in ex["request"]:
            bodies[ex["request"]["file"]] = (WIRE / "bodies" / ex["request"]["file"]).read_bytes()
    replayed = gen.run(recorded, bodies, redis_url)
    for want, got in zip(recorded, replayed, strict=True):
        assert got["response"] == want["response"], want["name"]
        if "file" in want["response"]:
            name = want["response"]["file"]
            assert bodies[name] == (WIRE / "bodies" / name).read_bytes(), name


def test_vectors_are_current(tmp_path: Path) -> None:
    """Regenerating gives the committed bytes (else run testdata/gen_wire_vectors.py)."""
    gen.generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = [p.relative_to(WIRE) for p in WIRE.rglob("*") if p.is_file()]
    committed = sorted(p for p in committed if p.name != "README.md")
    assert fresh == committed
    for rel in fresh:
        assert (tmp_path / rel).read_bytes() == (WIRE / rel).read_bytes(), str(rel)
