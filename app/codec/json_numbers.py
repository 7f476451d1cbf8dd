"""Large arrays of numbers in JSON bodies, parsed without a Python object per number.

`orjson.loads` turns `[0.1, 0.2, ...]` into a list of Python floats, 32 bytes a number
(a pointer and a float object) for text of ~11 bytes a number: a 248 MiB JSON step took
the server from 74 MiB to 4.3 GiB (issue #16). Here each large array of numbers is found
in the raw bytes and parsed piece by piece (a few hundred KiB of text at a time) into one
float64 array, and the array's text is replaced by a placeholder string, so that orjson
parses only the small rest. Numbers are still read by orjson and converted by the same
`numpy.asarray` call as before, so every value is bit-for-bit what the old path produced.

Nothing here decides what a body means. An array is taken out only once it is proven to
be exactly a JSON array of numbers — flat, or nested and rectangular, non-empty — and
everything else (ragged, empty, invalid text, numbers beyond float64) stays in the text,
so orjson and `json_tensors` see it and word their errors as they always did. If the
reduced text does not parse, or a placeholder does not land where a tensor's data goes,
`parse` gives up (UNPARSED) and the caller parses the body whole, the old way.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

MIN_BODY = 2 << 20
"""Smaller bodies go straight to orjson, which is faster there (1 MiB: 7.1 ms against 8.0;
2 MiB: even; 10 MiB: 90 ms against 70, measured), and a small body cannot blow memory
up."""
MIN_SPAN = 4096
"""Arrays of less text than this stay with orjson (shapes, betas, small biases)."""
PIECE = 1 << 14
"""Text parsed per orjson call. orjson's parser builds a document tree of ~16x the text it
is given before it makes the list (~3x), so pieces are small: 16 KiB costs ~0.3 MiB at a
time and parses as fast as 256 KiB (measured); one orjson call on a whole 42 MiB body
peaked at ~300 MiB."""

UNPARSED: Any = object()
"""`parse` could not take the body apart; parse it whole."""

_WS = b" \t\n\r"  # JSON's whitespace, no more (no \f, \v)
_NUMBER = b"0123456789+-.eE"
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_NUMBER_TO_N = bytes.maketrans(_NUMBER, b"n" * len(_NUMBER))


@functools.lru_cache(maxsize=4)
def _scanner(min_span: int) -> re.Pattern[bytes]:
    """One match per large array: skip everything else, strings whole (a `[` inside a
    string is text), then capture a `[` followed by at least `min_span` bytes that can
    only belong to an array of numbers. Every quantifier is possessive and the group
    always matches, so the scan is linear on any input (no retries from the next byte)."""
    cls = rb"[0-9+\-.eE,\[\] \t\n\r]"
    skip = rb'[^"\[]++|"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)|\[(?!' + cls + b"{%d})" % min_span
    return re.compile(b"(?:" + skip + rb")*+(?:(\[" + cls + rb"*+)|\Z)", re.S)


class Numbers:
    """A JSON array of numbers already parsed: float64 values (row-major) and the shape
    its nesting gives (`(n,)` for a flat array). `json_tensors` decodes it as it would
    decode the list it stands for."""

    __slots__ = ("shape", "values")

    def __init__(self, values: npt.NDArray[np.float64], shape: tuple[int, ...]) -> None:
        self.values = values
        self.shape = shape


def _canonical(dims: list[int]) -> bytes:
    """The brackets and commas of a rectangular nested array of this shape."""
    text = b"[" + b"," * (dims[-1] - 1) + b"]"
    for d in reversed(dims[:-1]):
        text = b"[" + b",".join([text] * d) + b"]"
    return text


def _shape_of(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape of a rectangular array from its brackets and commas (numbers removed), or
    None. Each dimension is read off the first element at its depth, as `json_tensors`
    infers shapes, and then the whole skeleton must equal the one that shape gives."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if not 0 < depth <= 64:
        return None  # deeper nesting is refused by json_tensors, with its message
    dims = [skeleton.find(b"]") - depth + 1]  # commas between the opening and first `]`
    if dims[0] < 1:
        return None
    size = dims[0] + 1  # bytes of one innermost list
    for level in range(depth - 1, 0, -1):
        run = depth - level + 1  # closing brackets that end the first list at this level
        end = skeleton.find(b"]" * run)
        count, rest = divmod(end + run - level, size + 1)
        if end < 0 or rest or count < 1:
            return None
        dims.insert(0, count)
        size = count * (size + 1) + 1
    if size != len(skeleton) or _canonical(dims) != skeleton:
        return None
    return tuple(dims)


def _array(body: bytes, start: int, stop: int) -> Numbers | None:
    """Parse `body[start:stop]` (from `[` to its `]`) if it is a non-empty rectangular
    array of numbers, else None (the text then stays for orjson).

    The text is cut at commas into pieces; each piece is parsed as `[piece]` by orjson, with
    the brackets of a nested array turned into spaces. That alone would accept misplaced
    numbers (`[[1,2]3]`), so a nested array must also pass two checks: no number next to
    the outside of a bracket (`]3`, `3[`) and brackets and commas exactly those of the
    shape read from its first elements. Together with the count (one number per comma,
    plus one) they prove the text is the JSON array the numbers and shape describe."""
    count = body.count(b",", start, stop) + 1
    nested = body.find(b"[", start + 1, stop) >= 0
    out = np.empty(count, dtype=np.float64)
    skeleton = [b"["]
    view, scratch = memoryview(body), bytearray(b"[")
    filled, pos, last = 0, start + 1, stop - 1
    while True:
        comma = body.find(b",", pos + PIECE, last) if pos + PIECE < last else -1
        end = last if comma < 0 else comma
        if nested:
            piece = body[pos:end]
            marks = piece.translate(_NUMBER_TO_N, _WS)
            if b"n[" in marks or b"]n" in marks:
                return None
            skeleton.append(marks.translate(None, b"n"))
            scratch[1:] = piece.translate(_BRACKETS_TO_SPACES)
        else:
            scratch[1:] = view[pos:end]  # `[piece]` with one copy
        scratch.append(0x5D)
        try:
            values = orjson.loads(scratch)
        except orjson.JSONDecodeError:
            return None
        if filled + len(values) > count:
            return None
        out[filled : filled + len(values)] = np.asarray(values, dtype=np.float64)
        filled += len(values)
        if comma < 0:
            break
        pos = comma + 1
        skeleton.append(b",")
    if filled != count:
        return None  # an empty array, or an empty piece between two commas
    if not nested:
        return Numbers(out, (count,))
    skeleton.append(b"]")
    shape = _shape_of(b"".join(skeleton))
    if shape is None or math.prod(shape) != count:
        return None
    return Numbers(out, shape)


def parse(body: bytes, tensors_at: str) -> Any:
    """`orjson.loads(body)`, with the large arrays at `body[tensors_at][name]` and
    `body[tensors_at][name]["data"]` given as `Numbers`, or UNPARSED.

    Arrays found anywhere else (a checkpoint's metadata, a misplaced key) are put back as
    the lists orjson makes of their text. Placeholders carry a random nonce, so a body
    cannot forge one."""
    nonce = secrets.token_hex(8)
    found: dict[str, tuple[int, int, Numbers]] = {}
    parts: list[bytes] = []
    done = 0
    for match in _scanner(MIN_SPAN).finditer(body):
        start = match.start(1)
        if start < 0:
            continue
        stop = body.rfind(b"]", start, match.end(1)) + 1
        numbers = _array(body, start, stop) if stop > 0 else None
        if numbers is None:
            continue
        key = f"\x00optd-{nonce}-{len(found)}"
        found[key] = (start, stop, numbers)
        parts += [body[done:start], b'"\\u0000' + key[1:].encode() + b'"']
        done = stop
    if not found:
        return UNPARSED
    parts.append(body[done:])
    try:
        obj = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError:
        return UNPARSED
    tensors = obj.get(tensors_at) if type(obj) is dict else None
    if type(tensors) is dict:
        for name, value in tensors.items():
            if type(value) is str and value in found:
                tensors[name] = found.pop(value)[2]
            elif type(value) is dict and type(value.get("data")) is str:
                if value["data"] in found:
                    value["data"] = found.pop(value["data"])[2]
    if found and not _restore(obj, body, found):
        return UNPARSED
    return obj


def _restore(obj: Any, body: bytes, found: dict[str, tuple[int, int, Numbers]]) -> bool:
    """Put the text of arrays found outside tensors back as orjson lists; False if some
    placeholder is nowhere a value (a key, inside a string, a duplicate key that lost)."""
    stack = [obj] if type(obj) in (dict, list) else []
    while stack and found:
        node = stack.pop()
        items: Any = node.items() if type(node) is dict else enumerate(node)
        for key, value in list(items):
            if type(value) is str and value in found:
                start, stop, _ = found.pop(value)
                node[key] = orjson.loads(body[start:stop])
            elif type(value) in (dict, list):
                stack.append(value)
    return not found
