"""The safetensors codec against the reference implementation and hostile bodies."""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import deserialize
from safetensors.numpy import load as ref_load
from safetensors.numpy import save as ref_save

from app.codec.safetensors import (
    FLOAT_DTYPES,
    INT_DTYPES,
    decode,
    encode,
    encode_parts,
)
from app.problems import InvalidBody, InvalidTensor, Problem, TooLarge

GOLDEN = Path(__file__).resolve().parent.parent / "testdata" / "safetensors"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text(encoding="utf-8"))["files"]
ALL = FLOAT_DTYPES + INT_DTYPES
DECODED = {"F16": "float16", "BF16": "float32", "F32": "float32", "F64": "float64"}
DECODED |= {"I32": "int32", "I64": "int64"}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame(header: Any, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype: Any, shape: list[Any], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_files_decode_to_the_manifest(name: str) -> None:
    body = (GOLDEN / name).read_bytes()
    spec = MANIFEST[name]
    assert hashlib.sha256(body).hexdigest() == spec["sha256"]
    tensors, metadata = decode(body, allowed_dtypes=ALL)
    assert metadata == (spec["metadata"] or {})
    assert list(tensors) == spec["order"]
    for tname, want in spec["tensors"].items():
        got = tensors[tname]
        assert got.dtype == np.dtype(DECODED[want["dtype"]])
        assert list(got.shape) == want["shape"]
        expected = np.array(want["data"], dtype=got.dtype)  # exact bits, -0.0 included
        assert got.reshape(-1).tobytes() == expected.tobytes()


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if n != "bf16.safetensors"))
def test_reencoding_golden_files_is_byte_identical(name: str) -> None:
    body = (GOLDEN / name).read_bytes()
    tensors, metadata = decode(body, allowed_dtypes=ALL)
    assert encode(tensors, metadata if MANIFEST[name]["metadata"] else None) == body


def test_bf16_widens_to_exact_float32_bits() -> None:
    bits = np.arange(0, 2**16, 7, dtype=np.uint16)
    body = frame({"x": entry("BF16", [len(bits)], 0, 2 * len(bits))}, bits.tobytes())
    got = decode(body)[0]["x"]
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), bits.astype(np.uint32) << 16)


def test_decode_is_zero_copy_over_the_body() -> None:
    body = (GOLDEN / "mixed_meta.safetensors").read_bytes()
    whole = np.frombuffer(body, np.uint8)
    tensors, _ = decode(body)
    for name in ("layer.0.weight", "layer.0.bias", "emb.weight"):
        assert np.shares_memory(tensors[name], whole)
        assert not tensors[name].flags.writeable


def test_decode_accepts_bytearray_and_memoryview_slices() -> None:
    body = (GOLDEN / "f32_shapes.safetensors").read_bytes()
    want = decode(body)[0]
    for variant in (bytearray(body), memoryview(b"xx" + body)[2:]):
        got = decode(variant)[0]
        assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in want.items()}
    with pytest.raises(InvalidBody, match="contiguous"):
        decode(memoryview(bytearray(body))[::2])
    with pytest.raises(InvalidBody):
        decode("not bytes")  # type: ignore[arg-type]


def test_header_order_does_not_matter_result_is_in_offset_order() -> None:
    header = {
        "b": entry("F32", [1], 4, 8),
        "__metadata__": {"k": "v"},
        "a": entry("F32", [1], 0, 4),
    }
    tensors, metadata = decode(frame(header, np.array([1, 2], "<f4").tobytes()))
    assert list(tensors) == ["a", "b"] and metadata == {"k": "v"}
    assert tensors["b"].tolist() == [2.0]


def test_encode_is_loadable_by_the_reference() -> None:
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not contiguous
        "big_endian": np.array([1.5, -2.25], dtype=">f8"),
        "scalar": np.array(0.5, dtype=np.float16),
        "empty": np.zeros((2, 0), dtype=np.float32),
        "steps": np.array([1, 2**40], dtype=np.int64),
        "count": np.array([3], dtype=np.int32),
    }
    loaded = ref_load(encode(tensors, {"a": "1", "b": "2"}))
    assert sorted(loaded) == sorted(tensors)
    for name, arr in tensors.items():
        assert loaded[name].dtype == arr.dtype.newbyteorder("=")
        assert loaded[name].shape == arr.shape
        assert np.array_equal(loaded[name], arr)


def test_encode_matches_reference_bytes_in_reference_order() -> None:
    tensors: dict[str, np.ndarray] = {
        "a": np.ones((2, 2), np.float64),
        "b": np.arange(3, dtype=np.float32),
    }
    assert encode(tensors, {"k": "v"}) == ref_save(tensors, metadata={"k": "v"})
    assert encode({}) == b"\x08" + b"\x00" * 7 + b"{}      "


def test_encode_parts_alias_contiguous_arrays_and_copy_others() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = a.T
    parts = encode_parts({"a": a, "t": t}, {"k": "v"})
    assert len(parts) == 3
    header = bytes(parts[0])
    assert int.from_bytes(header[:8], "little") == len(header) - 8
    assert (len(header) - 8) % 8 == 0 and header.endswith(b" ")
    assert np.shares_memory(np.frombuffer(parts[1], np.uint8), a)
    assert bytes(parts[2]) == np.ascontiguousarray(t).tobytes()
    assert b"".join(parts) == encode({"a": a, "t": t}, {"k": "v"})


def test_encode_rejects_what_it_cannot_write() -> None:
    with pytest.raises(InvalidTensor, match="dtype bool cannot be written"):
        encode({"m": np.array([True])})
    with pytest.raises(InvalidTensor, match="named '__metadata__'"):
        encode({"__metadata__": np.zeros(1, np.float32)})
    with pytest.raises(InvalidTensor, match="strings to strings"):
        encode({}, {"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidTensor, match="not an array"):
        encode({"r": [[1.0], [1.0, 2.0]]})  # type: ignore[dict-item]


OK = np.zeros(2, "<f4").tobytes()


def one(dtype: Any, shape: list[Any], begin: int, end: int, data: bytes = OK) -> bytes:
    """A body with the single tensor 'a'."""
    return frame({"a": entry(dtype, shape, begin, end)}, data)


BAD_BODIES: list[tuple[str, bytes, type[Problem], str]] = [
    ("short", b"\x01\x02", InvalidBody, "body is 2 bytes, too short"),
    ("len>body", struct.pack("<Q", 100) + b"{}", InvalidBody, "header length 100 is larger"),
    ("not utf8", frame(None, raw=b'{"\xff":1}'), InvalidBody, "not valid UTF-8 JSON"),
    ("not json", frame(None, raw=b"{,}"), InvalidBody, "not valid UTF-8 JSON"),
    ("nul pad", frame(None, raw=b"{}\x00\x00"), InvalidBody, "not valid UTF-8 JSON"),
    ("array", frame([]), InvalidBody, "must be a JSON object, got list"),
    ("surrogate", frame(None, raw=b'{"\\ud800":1}'), InvalidBody, "not valid UTF-8 JSON"),
    ("meta int", frame({"__metadata__": {"k": 1}}), InvalidBody, "value for 'k' must be a string"),
    ("meta list", frame({"__metadata__": []}), InvalidBody, "JSON object of strings"),
    ("meta dup", frame(None, raw=b'{"__metadata__":{"k":"a","k":"b"}}'), InvalidBody, "repeats"),
    ("dup name", frame(None, raw=b'{"a":1,"a":2}'), InvalidTensor, "'a' twice"),
    ("dup field", frame(None, raw=b'{"a":{"dtype":"F32","dtype":"F32"}}'), InvalidBody, "repeats"),
    ("not entry", frame({"a": 3}), InvalidTensor, "must be an object"),
    ("missing", frame({"a": {"dtype": "F32"}}), InvalidTensor, "lacks shape, data_offsets"),
    ("dtype", one("U8", [8], 0, 8), InvalidTensor, "'U8' is not accepted"),
    ("unknown", one("F31", [2], 0, 8), InvalidTensor, "not a safetensors dtype"),
    ("dtype type", one([], [2], 0, 8), InvalidTensor, "dtype [] is not"),
    ("int64", one("I64", [1], 0, 8), InvalidTensor, "use one of F16, BF16, F32, F64"),
    ("neg dim", one("F32", [-2], 0, 8), InvalidTensor, "non-negative integers"),
    ("float dim", one("F32", [2.0], 0, 8), InvalidTensor, "got [2.0]"),
    ("bool dim", one("F32", [True], 0, 4, OK[:4]), InvalidTensor, "shape must"),
    ("65 dims", one("F32", [1] * 65, 0, 4, OK[:4]), InvalidTensor, "at most 64"),
    ("offsets", frame({"a": {**entry("F32", [2], 0, 8), "data_offsets": [0]}}), InvalidTensor,
     "[begin, end]"),
    ("reversed", one("F32", [2], 8, 0), InvalidBody, "end before they begin"),
    ("size", one("F32", [3], 0, 8), InvalidTensor, "needs 12 bytes"),
    ("gap", one("F32", [1], 4, 8), InvalidBody, "leaves a gap"),
    ("trailing", one("F32", [2], 0, 8, OK + b"x"), InvalidBody, "1 stray bytes"),
    ("truncated", one("F32", [2], 0, 8, OK[:6]), InvalidBody, "truncated"),
    ("huge", one("F32", [2**20, 2**20], 0, 8), InvalidTensor, "needs 4398046511104 bytes"),
    ("2**40 squared", one("F32", [2**40, 2**40], 0, 8), InvalidTensor, "overflows a 64-bit size"),
    ("overflow", one("F32", [2**40, 2**40, 0], 0, 0, b""), InvalidTensor, "overflows"),
    ("numpy dims", one("F32", [0, 2**63], 0, 0, b""), InvalidTensor, "not usable"),
    ("usize", one("F32", [2**64], 0, 8), InvalidTensor, "shape must"),
    ("empty name", frame({"": entry("F32", [2], 0, 8)}, OK), InvalidTensor, "1 to 512 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "cls", "detail"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_malformed_bodies_raise_the_right_problem(
    body: bytes, cls: type[Problem], detail: str
) -> None:
    with pytest.raises(cls) as info:
        decode(body)
    assert type(info.value) is cls
    assert detail in info.value.detail


def test_overlap_names_both_sides() -> None:
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)}
    with pytest.raises(InvalidBody) as info:
        decode(frame(header, OK))
    assert info.value.detail == (
        "tensor 'b': data_offsets [4, 8] overlaps the previous tensor, which should begin at 8; "
        "tensors must be packed back to back from offset 0"
    )


def test_exact_detail_for_a_shape_mismatch() -> None:
    with pytest.raises(InvalidTensor) as info:
        decode(frame({"w": entry("F32", [2, 3], 0, 20)}, b"\0" * 20))
    assert info.value.detail == (
        "tensor 'w': shape [2, 3] of F32 needs 24 bytes, but data_offsets [0, 20] span 20; "
        "fix the shape or the offsets"
    )
    assert info.value.extra == {"tensor": "w"}


def test_limits() -> None:
    body = (GOLDEN / "f32_shapes.safetensors").read_bytes()
    with pytest.raises(TooLarge, match="the limit is 64"):
        decode(body, max_header_bytes=64)
    with pytest.raises(TooLarge, match="5 tensors; the limit is 4"):
        decode(body, max_tensors=4)
    assert len(decode(body, max_tensors=5)[0]) == 5
    ok, bad = "é" * 256, "é" * 256 + "x"
    assert list(decode(frame({ok: entry("F32", [2], 0, 8)}, OK))[0]) == [ok]
    with pytest.raises(InvalidTensor, match="is 513 UTF-8 bytes"):
        decode(frame({bad: entry("F32", [2], 0, 8)}, OK))
    with pytest.raises(InvalidTensor, match="is 3 UTF-8 bytes; names must be 1 to 2"):
        decode(frame({"abc": entry("F32", [2], 0, 8)}, OK), max_name_bytes=2)


def test_int_dtypes_only_when_allowed_and_unknown_fields_ignored() -> None:
    body = frame({"n": {**entry("I64", [1], 0, 8), "extra": {"x": 1}}}, struct.pack("<q", -5))
    assert decode(body, allowed_dtypes=ALL)[0]["n"].tolist() == [-5]
    with pytest.raises(InvalidTensor, match="'I64' is not accepted here"):
        decode(body)


def test_huge_declared_shapes_do_not_allocate() -> None:
    bodies = [
        frame({"a": entry("F64", [2**40, 2**40], 0, 2**63)}, OK),
        frame({"a": entry("F32", [2**30, 2**30], 0, 2**62)}, OK),
        frame({"a": entry("F32", [2**61], 0, 2**63)}),
    ]
    tracemalloc.start()
    try:
        for body in bodies:
            with pytest.raises(Problem):
                decode(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(["<f2", "<f4", "<f8", "<i4", "<i8", ">f4"])))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    size = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer(draw(st.binary(min_size=size, max_size=size)), dtype).reshape(shape)


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=8), arrays(), max_size=5))
def test_roundtrip_is_bit_exact_and_reference_compatible(tensors: dict[str, np.ndarray]) -> None:
    body = encode(tensors, {"m": "x"})
    got, meta = decode(body, allowed_dtypes=ALL)
    assert meta == {"m": "x"} and list(got) == list(tensors)
    ref = ref_load(body)
    for name, arr in tensors.items():
        native = arr.astype(arr.dtype.newbyteorder("<"))
        assert got[name].shape == arr.shape
        assert got[name].tobytes() == native.tobytes() == ref[name].tobytes()


def _same_as_reference(body: bytes) -> None:
    """Whatever we accept, the reference accepts with the same tensors."""
    try:
        ours, _ = decode(body, allowed_dtypes=ALL)
    except Problem:
        return
    ref = dict(deserialize(body))  # type: ignore[no-untyped-call]
    assert sorted(ours) == sorted(ref)
    for name, arr in ours.items():
        assert list(arr.shape) == ref[name]["shape"]
        if ref[name]["dtype"] != "BF16":
            assert arr.tobytes() == bytes(ref[name]["data"])


SEEDS = [(GOLDEN / n).read_bytes() for n in sorted(MANIFEST)]


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_problems(body: bytes) -> None:
    _same_as_reference(body)
    _same_as_reference(struct.pack("<Q", len(body)) + body)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 255), st.sampled_from("fdit")), max_size=4
    ),
)
def test_mutated_golden_files_only_raise_problems(
    seed: bytes, edits: list[tuple[int, int, str]]
) -> None:
    body = bytearray(seed)
    for pos, value, how in edits:
        pos %= len(body) + 1
        if how == "f" and pos < len(body):
            body[pos] ^= value or 1
        elif how == "d":
            del body[pos : pos + value % 4 + 1]
        elif how == "i":
            body[pos:pos] = bytes([value])
        else:
            del body[pos:]
    _same_as_reference(bytes(body))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
ENTRIES = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from([*ALL, "U8", "X"]) | JSON_VALUES,
        "shape": st.lists(st.sampled_from([0, 1, 2, 3, 2**40, 2**64, -1]), max_size=4)
        | JSON_VALUES,
        "data_offsets": st.lists(st.integers(-1, 40) | st.just(2**64), min_size=2, max_size=2)
        | JSON_VALUES,
    }
)


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=3) | st.just("__metadata__"), ENTRIES | JSON_VALUES, max_size=4
    ),
    st.integers(0, 40),
)
def test_random_headers_only_raise_problems(header: dict[str, Any], data_len: int) -> None:
    _same_as_reference(frame(header, bytes(range(data_len))))


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=3), arrays(), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from("bem"), st.integers(-8, 8)), max_size=3),
    st.none() | st.integers(-8, 8),
)
def test_nudged_offsets_and_sizes_agree_with_reference(
    tensors: dict[str, np.ndarray], nudges: list[tuple[int, str, int]], extra: int | None
) -> None:
    """Shift a begin, an end or a whole region, and the data length: gaps, overlaps, etc."""
    body = encode(tensors)
    n = int.from_bytes(body[:8], "little")
    header = json.loads(body[8 : 8 + n])
    names = list(header)
    for which, how, delta in nudges:
        offsets = header[names[which % len(names)]]["data_offsets"]
        for side in {"b": [0], "e": [1], "m": [0, 1]}[how]:
            offsets[side] = max(0, offsets[side] + delta)
    data = body[8 + n :]
    if extra is None:  # make the data end exactly where the furthest tensor ends
        extra = max(e["data_offsets"][1] for e in header.values()) - len(data)
    data = data + bytes(extra) if extra >= 0 else data[:extra]
    _same_as_reference(frame(header, data))
