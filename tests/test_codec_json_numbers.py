"""Large JSON arrays parsed straight into numpy (app/codec/json_numbers.py, issue #16 item 1).

The fast path must be invisible: for any body, valid or not, parsing and decoding with it
gives bit-for-bit the arrays, or exactly the error, of the plain orjson path. The
thresholds are lowered so that small generated bodies take it, and pieces are tiny so
that every split position is exercised.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.codec import json_numbers
from app.codec.json_numbers import Numbers
from app.codec.json_tensors import decode_tensors, parse_body
from app.problems import InvalidBody, InvalidTensor, Problem


@contextmanager
def thresholds(min_span: int = 1, piece: int = 1) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_numbers, "MIN_BODY", 0)
        mp.setattr(json_numbers, "MIN_SPAN", min_span)
        mp.setattr(json_numbers, "PIECE", piece)
        yield


def outcome(body: bytes, fast: bool, at: str = "grads") -> Any:
    """What a route gets from this body: decoded tensors (shape, dtype, exact bytes) and
    the other members, or the problem raised (type and detail)."""
    try:
        obj = parse_body(body, tensors_at=at if fast else None)
        if type(obj) is not dict:
            return ("not an object", orjson.dumps(obj))
        got = decode_tensors(obj.get(at))
        tensors = {k: (a.shape, a.dtype.str, a.tobytes()) for k, a in got.items()}
        rest = {k: v for k, v in obj.items() if k != at}
        return ("ok", tensors, orjson.dumps(rest))
    except Problem as exc:
        return (type(exc).__name__, exc.detail)


def same(body: bytes, at: str = "grads") -> Any:
    old = outcome(body, fast=False, at=at)
    with thresholds():
        assert outcome(body, fast=True, at=at) == old
    with thresholds(min_span=3, piece=4):
        assert outcome(body, fast=True, at=at) == old
    return old


NUMBERS = [
    "0", "-0", "-0.0", "1", "-7", "2.5", "1e3", "1E+3", "-1.5e-3", "5e-324", "1e-310",
    "2.2250738585072011e-308", "1.7976931348623157e308", "18446744073709551615",
    "-9223372036854775809", "0.1000000000000000055511151231257827", "123456789012345678901234",
    "1e-400", "3.4028235e38",
]  # fmt: skip
BROKEN = [
    "01", "+1", ".5", "1.", "1e", "-", "--1", "1e400", "NaN", "Infinity", "-Infinity", "true",
    "null", '"1"', "{}", "[]", "1 2", "0x10",
]  # fmt: skip

INSERTS = '[],0123456789.-eE +"'

number = st.sampled_from(NUMBERS) | st.floats(allow_nan=False, allow_infinity=False).map(repr)
number |= st.integers(-(2**70), 2**70).map(str)


@st.composite
def nested(draw: st.DrawFn, depth: int) -> str:
    """A (mostly) rectangular nested array, sometimes ragged, with random whitespace."""
    ws = st.sampled_from(["", "", " ", "\n", "\t ", "\r\n"])
    dims = [draw(st.integers(0, 4)) for _ in range(depth)]

    def build(level: int) -> str:
        n = dims[level] + (draw(st.sampled_from([0, 0, 0, 0, 1, -1])) if level else 0)
        items = [draw(number) if level == depth - 1 else build(level + 1) for _ in range(max(n, 0))]
        return "[" + draw(ws) + ("," + draw(ws)).join(items) + draw(ws) + "]"

    return build(0)


@st.composite
def body(draw: st.DrawFn) -> bytes:
    """A step body; maybe one small mutation (a character inserted or removed), so invalid
    text, misplaced numbers and broken structure are covered too."""
    tensors = []
    for i in range(draw(st.integers(1, 3))):
        data = draw(nested(draw(st.integers(1, 3))))
        if draw(st.booleans()):
            shape = draw(st.sampled_from(["[]", "[0]", "[1]", "[2]", "[2, 2]", "[4, 1]"]))
            data = f'{{"shape": {shape}, "dtype": "float32", "data": {data}}}'
        tensors.append(f'"t{i}": {data}')
    text = '{"grads": {' + ", ".join(tensors) + '}, "loss": 0.5}'
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from([*INSERTS, *BROKEN])) + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    return text.encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body())
@example(b'{"grads": {"w": [[1,2]3]}}')
@example(b'{"grads": {"w": [[1,2],[3,]4]}}')
@example(b'{"grads": {"w": [[1,2],[3,4]5]}}')
@example(b'{"grads": {"w": [[1,2][3,4]]}}')
@example(b'{"grads": {"w": [[],[]]}}')
@example(b'{"grads": {"w": [1,2,]}}')
@example(b'{"grads": {"w": [,1]}}')
@example(b'{"grads": {"w": [1,,2]}}')
@example(b'{"grads": {"w": [[1],[2,3]]}}')
@example(b'{"grads": {"w": {"shape": [3], "data": [[1,2,3]]}}}')
@example(b'{"grads": {"w": {"shape": [2, 2], "data": [1,2,3]}}}')
def test_same_result_as_orjson_for_any_body(text: bytes) -> None:
    same(text)


@pytest.mark.parametrize("text", [*NUMBERS, *BROKEN])
def test_each_number_form_as_orjson_reads_it(text: str) -> None:
    for form in ("[{0}, 1, 2]", "[1, {0}, 2]", "[[1, {0}], [2, 3]]", "[1, 2, {0}]"):
        same(b'{"grads": {"w": ' + form.format(text).encode() + b"}}")


def test_values_round_trip_exactly() -> None:
    """Every float64 bit pattern written with repr (shortest round trip) or with 17
    significant digits comes back bit for bit: subnormals, -0.0, the extremes (the integer
    `-0` is 0, as orjson reads it: see NUMBERS)."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**63, 20_000, dtype=np.uint64) | (
        rng.integers(0, 2, 20_000, dtype=np.uint64) << np.uint64(63)
    )
    values = bits.view(np.float64)
    values = values[np.isfinite(values)]
    edge = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
    values = np.concatenate([values, edge])
    for fmt in (repr, "{:.16e}".format):
        text = ("[" + ",".join(fmt(float(v)) for v in values) + "]").encode()
        with thresholds(min_span=1, piece=1000):
            obj = parse_body(b'{"grads": {"w": ' + text + b"}}", tensors_at="grads")
        assert type(obj["grads"]["w"]) is Numbers
        got = decode_tensors(obj["grads"])["w"]
        assert got.tobytes() == values.tobytes()


def test_strings_keys_and_metadata_are_left_alone() -> None:
    """Arrays inside strings are text; arrays outside the tensors come back as the lists
    orjson makes (a checkpoint's metadata); an array where a value cannot go is an error."""
    big = "[" + ", ".join(str(i) for i in range(300)) + "]"
    ok = f'{{"tensors": {{"w": {big}}}, "meta": {{"steps": {big}}}, "note": "{big}"}}'
    old = same(ok.encode(), at="tensors")
    assert old[0] == "ok"
    with thresholds():
        obj = parse_body(ok.encode(), tensors_at="tensors")
    assert type(obj["tensors"]["w"]) is Numbers
    assert obj["meta"]["steps"] == list(range(300)) and obj["note"] == big
    for bad in (f'{{"grads": {{{big}: 1}}}}', f'{{"grads": {{"w": "x\\{big}}}}}'):
        assert same(bad.encode())[0] == "InvalidBody"


def test_a_forged_placeholder_is_just_a_string() -> None:
    """Placeholders carry a per-request nonce: text that looks like one is a string."""
    body = b'{"grads": {"w": "\\u0000optd-0000000000000000-0", "b": [1, 2, 3]}}'
    detail = "a tensor is an object {shape, dtype, data}, a nested list of numbers or a number"
    assert same(body) == ("InvalidTensor", f"tensor 'w' in grads: {detail}; got a string")


def test_duplicate_keys_last_one_wins() -> None:
    """RFC 8259 leaves it open; orjson keeps the last, and so does the fast path (it
    gives up and lets orjson parse the body when an array lost to a later key)."""
    result = same(b'{"grads": {"w": [[1, 2], [3, 4]], "w": [5, 6, 7]}}')
    assert result[1]["w"][0] == (3,)


def test_large_bodies_take_the_fast_path_by_default() -> None:
    """With the shipped thresholds a body of a few MiB is parsed into numpy, so memory is
    ~8 bytes a number instead of a list of Python floats (~32 bytes a number)."""
    g = np.random.default_rng(0).standard_normal(400_000).astype(np.float32)
    obj = {"grads": {"w": {"shape": [400, 1000], "dtype": "float32", "data": g}}}
    text = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(text) > json_numbers.MIN_BODY
    tracemalloc.start()
    try:
        parsed = parse_body(text, tensors_at="grads")
        got = decode_tensors(parsed["grads"])["w"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(parsed["grads"]["w"]["data"]) is Numbers
    assert got.shape == (400, 1000) and (got.astype(np.float32) == g.reshape(400, 1000)).all()
    # the float64 array (3.2 MB, 0.73x the text) and one piece at a time; orjson on the
    # whole body peaked at 4.4x
    assert peak < 1.0 * len(text), (peak, len(text))


def test_not_a_json_object_and_bad_json() -> None:
    big = ("[" + ",".join(["1.5"] * 2000) + "]").encode()
    for text in (big, b" " + big + b" x", b'{"grads": {"w": ' + big + b"}", b'"' + big):
        result = same(text)
        assert result[0] in ("not an object", "InvalidBody"), result
    with pytest.raises(InvalidBody), thresholds():
        parse_body(b'{"grads": {"w": ' + big + b"}", tensors_at="grads")
    with pytest.raises(InvalidTensor, match="non-finite"), thresholds():
        parse_body(b'{"grads": {"w": ' + big[:-1] + b", 1e999]}}", tensors_at="grads")
