"""JSON tensors: accepted forms, exact error details, float round-trips, fuzzing."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec.json_tensors import (
    decode_tensor,
    decode_tensors,
    dumps,
    encode_tensor,
    encode_tensors,
    parse_body,
)
from app.problems import InvalidBody, InvalidTensor, Problem, TooLarge


def test_object_form_with_flat_row_major_data() -> None:
    got = decode_tensor("w", {"shape": [2, 3], "dtype": "float32", "data": [1, 2, 3, 4, 5, 6.5]})
    assert got.dtype == np.float64 and got.shape == (2, 3)
    assert got.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]


@pytest.mark.parametrize(
    ("obj", "shape", "values"),
    [
        (2.5, (), [2.5]),
        (-3, (), [-3.0]),
        ([], (0,), []),
        ([[], []], (2, 0), []),
        ([1, 2, 3], (3,), [1, 2, 3]),
        ([[1, 2], [3, 4], [5, 6]], (3, 2), [1, 2, 3, 4, 5, 6]),
        ([[[1], [2]]], (1, 2, 1), [1, 2]),
        ({"data": [[1, 2]]}, (1, 2), [1, 2]),  # shape inferred, dtype defaults to float32
        ({"shape": [], "data": [7]}, (), [7]),
        ({"shape": [], "data": 7}, (), [7]),
        ({"shape": [2, 2], "data": [[1, 2], [3, 4]]}, (2, 2), [1, 2, 3, 4]),
        ({"shape": [0, 5], "data": []}, (0, 5), []),
        ({"shape": [2], "dtype": "bfloat16", "data": [2**64 - 1, 1e308]}, (2,), [2.0**64, 1e308]),
    ],
)
def test_accepted_forms(obj: Any, shape: tuple[int, ...], values: list[float]) -> None:
    got = decode_tensor("t", obj)
    assert got.dtype == np.float64
    assert got.shape == shape
    assert got.reshape(-1).tolist() == values


DEEP: Any = 1.0
for _ in range(65):
    DEEP = [DEEP]

BAD: list[tuple[Any, type[Problem], str]] = [
    ({"shape": [2, 3], "data": [1, 2, 3, 4, 5]}, InvalidTensor, "[2, 3] needs 6 values, got 5"),
    ([1, True], InvalidTensor, "data[1] is true (a boolean); values must be JSON numbers"),
    (False, InvalidTensor, "got false (a boolean)"),
    ([[1, 2], [3, None]], InvalidTensor, "data[1][1] is null; values must be JSON numbers"),
    ([1, "2"], InvalidTensor, "data[1] is a string; values must be JSON numbers"),
    ([[1, 2], [3]], InvalidTensor, "data[1] is 1 items but 2 items were expected"),
    ([[1, 2], 3], InvalidTensor, "data[1] is a number but 2 items were expected"),
    ([[1, [2]], [3, 4]], InvalidTensor, "data[0][1] is an array; values must be JSON numbers"),
    ([[[1]], [[2, 3]]], InvalidTensor, "data[1][0] is 2 items but 1 items were expected"),
    ([[], [1]], InvalidTensor, "data[1] is 1 items but 0 items were expected"),
    ({"data": [1], "dtpye": "float32"}, InvalidTensor, "unknown key(s) ['dtpye']"),
    ({"shape": [1]}, InvalidTensor, "'data' is missing"),
    ({"data": [1], "dtype": "int8"}, InvalidTensor, "dtype 'int8' is not supported"),
    ({"data": [1], "dtype": ["float32"]}, InvalidTensor, "is not supported"),
    ({"shape": [-1], "data": []}, InvalidTensor, "non-negative integers, got [-1]"),
    ({"shape": [True], "data": [1]}, InvalidTensor, "shape must be"),
    ({"shape": 3, "data": [1, 2, 3]}, InvalidTensor, "got 3"),
    ({"shape": [1.0], "data": [1]}, InvalidTensor, "shape must be"),
    ({"shape": [3], "data": [[1, 2, 3]]}, InvalidTensor, "shape [3] does not match data of shape"),
    ({"shape": [1], "data": 5}, InvalidTensor, "does not match data of shape []"),
    ({"shape": [2**40, 2**40], "data": [1]}, TooLarge, "has more than 2147483648 elements"),
    ({"shape": [2**40, 2**40, 0], "data": [1]}, InvalidTensor, "needs 0 values, got 1"),
    ({"shape": [1] * 65, "data": [1]}, InvalidTensor, "at most 64"),
    ([float("nan")], InvalidTensor, "data[0] is nan; values must be finite"),
    (float("-inf"), InvalidTensor, "the value is -inf; values must be finite"),
    ([1, 10**400], InvalidTensor, "data[1] is too large for float64"),
    ("1.5", InvalidTensor, "got a string"),
    (None, InvalidTensor, "got null"),
    (DEEP, InvalidTensor, "data is nested deeper than 64 levels"),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "cls", "detail"), BAD)
def test_rejections_say_what_is_wrong(obj: Any, cls: type[Problem], detail: str) -> None:
    with pytest.raises(cls) as info:
        decode_tensor("w", obj)
    assert type(info.value) is cls
    assert info.value.detail.startswith("tensor 'w': ")
    assert detail in info.value.detail


def test_exact_detail_for_a_count_mismatch() -> None:
    with pytest.raises(InvalidTensor) as info:
        decode_tensor("w", {"shape": [2, 3], "data": [1, 2, 3, 4, 5]})
    assert info.value.detail == "tensor 'w': shape [2, 3] needs 6 values, got 5"
    assert info.value.extra == {"tensor": "w"}


def test_max_elements_is_checked_before_converting() -> None:
    with pytest.raises(TooLarge, match="more than 4 elements"):
        decode_tensor("w", [1, 2, 3, 4, 5], max_elements=4)
    with pytest.raises(TooLarge, match="more than 4 elements"):
        decode_tensor("w", {"shape": [5], "data": [1]}, max_elements=4)
    assert decode_tensor("w", [1, 2, 3, 4], max_elements=4).size == 4


def test_decode_tensors() -> None:
    got = decode_tensors({"a": [1, 2], "b.c": 3.5, "é": {"shape": [1], "data": [0]}})
    assert list(got) == ["a", "b.c", "é"]
    assert got["a"].tolist() == [1.0, 2.0] and got["b.c"].shape == ()
    with pytest.raises(InvalidBody, match="^params must be a JSON object mapping names"):
        decode_tensors([1, 2], what="params")
    with pytest.raises(TooLarge, match="grads has 3 tensors; the limit is 2"):
        decode_tensors({"a": 1, "b": 2, "c": 3}, max_tensors=2)
    with pytest.raises(InvalidTensor, match="names must be 1 to 512 bytes"):
        decode_tensors({"": 1})
    assert list(decode_tensors({"é" * 256: 1})) == ["é" * 256]
    with pytest.raises(InvalidTensor, match="is 514 UTF-8 bytes"):
        decode_tensors({"é" * 257: 1})
    with pytest.raises(InvalidTensor) as info:
        decode_tensors({"ok": 1, "w": [1, None]})
    assert info.value.detail == (
        "tensor 'w' in grads: data[1] is null; values must be JSON numbers"
    )


def test_parse_body() -> None:
    assert parse_body(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    assert parse_body(bytearray(b"[1]")) == [1]
    with pytest.raises(InvalidBody, match=r"not valid JSON: .*line 1, column 6"):
        parse_body(b'{"a":')
    with pytest.raises(InvalidBody, match="not valid JSON"):
        parse_body(b"\xff")
    with pytest.raises(InvalidBody, match="not valid JSON"):
        parse_body(b'{"info" "x"}')  # not mistaken for Infinity
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"nan"):
        with pytest.raises(InvalidTensor, match="non-finite number"):
            parse_body(b'{"grads": {"w": [1, ' + literal + b"]}}")
    with pytest.raises(InvalidBody, match="Input must be bytes"):
        parse_body(12)  # type: ignore[arg-type]


def test_encode_tensor_keeps_numpy_data_for_orjson() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    enc = encode_tensor(a)
    assert enc["shape"] == [2, 3] and enc["dtype"] == "float32"
    assert isinstance(enc["data"], np.ndarray) and np.shares_memory(enc["data"], a)
    assert dumps(enc) == b'{"shape":[2,3],"dtype":"float32","data":[0.0,1.0,2.0,3.0,4.0,5.0]}'
    assert dumps(encode_tensor(np.array(0.1, np.float32))) == (
        b'{"shape":[],"dtype":"float32","data":[0.1]}'
    )
    assert dumps(encode_tensor(np.array([1.5], ">f8"))) == (
        b'{"shape":[1],"dtype":"float64","data":[1.5]}'
    )
    assert dumps(encode_tensor(np.arange(4.0).reshape(2, 2).T))[-18:] == b"[0.0,2.0,1.0,3.0]}"
    assert dumps(encode_tensors({"s": np.array([3], np.int64)})) == (
        b'{"s":{"shape":[1],"dtype":"int64","data":[3]}}'
    )
    with pytest.raises(InvalidTensor, match="dtype bool cannot be written"):
        encode_tensor(np.array([True]))
    with pytest.raises(Problem, match="could not be serialised"):
        dumps({"x": object()})


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_json_roundtrip_is_bit_exact(dtype: type[np.floating[Any]]) -> None:
    rng = np.random.default_rng(0)
    width = np.dtype(dtype).itemsize * 8
    bits = rng.integers(0, 2**width, 200_000, dtype=np.uint64).astype(f"<u{width // 8}")
    values = bits.view(dtype)
    values = values[np.isfinite(values)]
    if dtype is np.float16:  # every finite float16
        values = np.arange(2**16, dtype=np.uint16).view(np.float16)
        values = values[np.isfinite(values)]
    body = dumps({"w": encode_tensor(values)})
    back = decode_tensors(parse_body(body))["w"].astype(dtype)
    assert back.view(bits.dtype).tobytes() == values.view(bits.dtype).tobytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=50))
def test_float32_roundtrip_property(xs: list[float]) -> None:
    a = np.array(xs, dtype=np.float32)
    back = decode_tensor("w", parse_body(dumps(encode_tensor(a)))).astype(np.float32)
    assert back.view(np.uint32).tolist() == a.view(np.uint32).tolist()


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=3)
    | st.sampled_from(["float32", "bfloat16", "shape", "data"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["shape", "dtype", "data", "x"]), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_values_only_raise_problems(obj: Any) -> None:
    try:
        got = decode_tensor("w", obj, max_elements=1000)
    except Problem:
        return
    assert got.dtype == np.float64 and np.isfinite(got).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_only_raise_problems(body: bytes) -> None:
    try:
        decode_tensors(parse_body(body))
    except Problem:
        pass
