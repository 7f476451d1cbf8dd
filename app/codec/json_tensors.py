"""Tensors in JSON bodies: `{"shape", "dtype", "data"}`, a nested list, or a number.

Bodies are parsed once by orjson; tensors are then converted with one
`numpy.asarray` call each. In large bodies the large arrays of numbers arrive already
parsed, as `json_numbers.Numbers`: orjson's parse tree and a Python float per number
cost ~15x the text. Type checks run as C-level `map`s over whole rows, not as Python
loops per element, because `numpy.asarray(..., float64)` alone would quietly accept
`true`, `null` (as NaN) and numeric strings. A slow, exact walk runs only to
word the error once something is wrong.

Duplicate keys inside one JSON object cannot be detected after orjson has parsed
it (the last one wins, which RFC 8259 allows); safetensors bodies reject them.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.codec import json_numbers
from app.codec.json_numbers import Numbers
from app.problems import InvalidBody, InvalidTensor, Problem, TooLarge

JSON_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
"""dtype names a client may declare; values are returned as float64 either way."""

_NUMBERS = frozenset({int, float})
_MAX_NDIM = 64
_KEYS = frozenset({"shape", "dtype", "data"})
_NON_FINITE = ("nan", "inf")  # orjson stops at the N of NaN, the I of [-]Infinity
_ENCODED = {("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64"}
_ENCODED |= {("i", 4): "int32", ("i", 8): "int64"}


def _kind(value: Any) -> str:
    """Name a value by its JSON type, as the client wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true (a boolean)" if value else "false (a boolean)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_body(body: bytes | bytearray | memoryview | str, *, tensors_at: str | None = None) -> Any:
    """Parse a JSON body; a non-finite literal is an invalid tensor, anything else bad JSON.

    `tensors_at` names the member holding the tensors (`grads`, `params`): in a large body
    their large arrays become `Numbers` instead of lists of Python floats."""
    if tensors_at is not None and type(body) is bytes and len(body) >= json_numbers.MIN_BODY:
        obj = json_numbers.parse(body, tensors_at)
        if obj is not json_numbers.UNPARSED:
            return obj
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        at = exc.doc[exc.pos : exc.pos + 3].lower() if isinstance(exc.doc, str) else ""
        if "infinity when parsed" in exc.msg or at in _NON_FINITE:
            raise InvalidTensor(
                f"the JSON body holds a non-finite number near character {exc.pos} "
                f"({exc.msg}); NaN, Infinity and numbers beyond float64 are not allowed"
            ) from None
        raise InvalidBody(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); "
            "send UTF-8 JSON"
        ) from None


def _shape(label: str, raw: Any) -> list[int]:
    ok = type(raw) is list and len(raw) <= _MAX_NDIM
    if not (ok and all(type(d) is int and d >= 0 for d in raw)):
        raise InvalidTensor(
            f"{label}: shape must be a list of at most {_MAX_NDIM} non-negative integers, "
            f"got {str(raw)[:100]}"
        )
    return list(raw)


def _limit(label: str, shape: list[int], max_elements: int) -> int:
    # 0 anywhere makes the tensor empty, so it is checked first; otherwise multiply with
    # an early exit so [2**40, 2**40, ...] never builds a huge integer.
    if 0 in shape:
        return 0
    total = 1
    for dim in shape:
        total *= dim
        if total > max_elements:
            raise TooLarge(
                f"{label}: shape {shape[:8]} has more than {max_elements} elements; "
                "split the tensor or use a smaller one"
            )
    return total


def _path(index: int, shape: list[int]) -> str:
    if not shape:
        return "the value"
    if len(shape) == 1:
        return f"data[{index}]"
    return "data" + "".join(f"[{int(i)}]" for i in np.unravel_index(index, shape))


def _values(label: str, flat: list[Any], shape: list[int]) -> npt.NDArray[np.float64]:
    """Convert a validated-length flat list of leaves; type-check them at C speed first."""
    if not set(map(type, flat)) <= _NUMBERS:
        for i, value in enumerate(flat):
            if not _is_number(value):
                raise InvalidTensor(
                    f"{label}: {_path(i, shape)} is {_kind(value)}; values must be JSON numbers"
                )
    try:
        arr = np.asarray(flat, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        for i, value in enumerate(flat):
            try:
                float(value)
            except (OverflowError, ValueError, TypeError):
                raise InvalidTensor(
                    f"{label}: {_path(i, shape)} is too large for float64"
                ) from None
        raise InvalidTensor(f"{label}: values could not be converted to float64") from None
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InvalidTensor(f"{label}: {_path(i, shape)} is {arr[i]}; values must be finite")
    return arr.reshape(shape)


def _nested(label: str, data: Any, max_elements: int) -> npt.NDArray[np.float64]:
    """Infer the shape of a (nested) list or number and check it is rectangular."""
    if type(data) is Numbers:  # parsed already: rectangular, finite float64 (json_numbers)
        _limit(label, list(data.shape), max_elements)
        return data.values.reshape(data.shape)
    if _is_number(data):
        return _values(label, [data], [])
    if type(data) is not list:
        raise InvalidTensor(
            f"{label}: a tensor is an object {{shape, dtype, data}}, a nested list of numbers "
            f"or a number; got {_kind(data)}"
        )
    shape, probe = [], data
    while type(probe) is list:
        shape.append(len(probe))
        if len(shape) > _MAX_NDIM:
            raise InvalidTensor(f"{label}: data is nested deeper than {_MAX_NDIM} levels")
        if not probe:
            break
        probe = probe[0]
    _limit(label, shape, max_elements)
    level: list[Any] = data
    for depth in range(1, len(shape)):
        if set(map(type, level)) - {list} or set(map(len, level)) - {shape[depth]}:
            _ragged(label, data, shape, [])
            raise InvalidTensor(f"{label}: nested lists must be rectangular")  # not reached
        level = list(chain.from_iterable(level))
    return _values(label, level, shape)


def _ragged(label: str, data: Any, shape: list[int], path: list[int]) -> None:
    """Find and report the first element that breaks the rectangular shape."""
    where = "data" + "".join(f"[{i}]" for i in path)
    if len(path) == len(shape):
        return
    if type(data) is not list or len(data) != shape[len(path)]:
        got = f"{len(data)} items" if type(data) is list else _kind(data)
        raise InvalidTensor(
            f"{label}: {where} is {got} but {shape[len(path)]} items were expected "
            f"(shape {shape} from the first elements); nested lists must be rectangular"
        )
    for i, item in enumerate(data):
        _ragged(label, item, shape, [*path, i])


def _decode(label: str, obj: Any, max_elements: int) -> npt.NDArray[np.float64]:
    if type(obj) is not dict:
        return _nested(label, obj, max_elements)
    unknown = set(obj) - _KEYS
    if unknown:
        raise InvalidTensor(
            f"{label}: unknown key(s) {sorted(unknown)}; a tensor object has shape, dtype, data"
        )
    dtype = obj.get("dtype", "float32")
    if dtype not in JSON_DTYPES:
        raise InvalidTensor(
            f"{label}: dtype {str(dtype)[:40]!r} is not supported; use one of "
            + ", ".join(JSON_DTYPES)
        )
    if "data" not in obj:
        raise InvalidTensor(f"{label}: 'data' is missing; send a flat row-major list of numbers")
    data = obj["data"]
    if "shape" not in obj:
        return _nested(label, data, max_elements)
    shape = _shape(label, obj["shape"])
    if type(data) is Numbers and len(data.shape) == 1:
        data = data.values  # flat: checked like a flat list
    elif type(data) is not list or (data and type(data[0]) is list):
        arr = _nested(label, data, max_elements)
        if list(arr.shape) != shape:
            raise InvalidTensor(
                f"{label}: shape {shape} does not match data of shape {list(arr.shape)}"
            )
        return arr
    size = _limit(label, shape, max_elements)
    if len(data) != size:
        raise InvalidTensor(f"{label}: shape {shape} needs {size} values, got {len(data)}")
    if type(data) is np.ndarray:
        return data.reshape(shape)
    return _values(label, data, shape)


def _named(name: str, label: str, obj: Any, max_elements: int) -> npt.NDArray[np.float64]:
    try:
        return _decode(label, obj, max_elements)
    except (InvalidTensor, TooLarge) as exc:
        exc.extra.setdefault("tensor", name)  # a machine-readable pointer for clients
        raise


def decode_tensor(name: str, obj: Any, *, max_elements: int = 2**31) -> npt.NDArray[np.float64]:
    """Decode one JSON tensor into a float64 array holding the values as sent."""
    return _named(name, f"tensor {name!r}", obj, max_elements)


def decode_tensors(
    obj: Any,
    *,
    what: str = "grads",
    max_tensors: int = 100_000,
    max_name_bytes: int = 512,
    max_elements: int = 2**31,
) -> dict[str, npt.NDArray[np.float64]]:
    """Decode a JSON object of name -> tensor (`what` names it in error details)."""
    if type(obj) is not dict:
        raise InvalidBody(
            f"{what} must be a JSON object mapping names to tensors, got {_kind(obj)}"
        )
    if len(obj) > max_tensors:
        raise TooLarge(f"{what} has {len(obj)} tensors; the limit is {max_tensors}")
    out: dict[str, npt.NDArray[np.float64]] = {}
    for name, value in obj.items():
        try:
            size = len(name.encode("utf-8"))
        except (UnicodeEncodeError, AttributeError):
            raise InvalidTensor(f"{what}: tensor name {name!r} is not valid UTF-8") from None
        if not 0 < size <= max_name_bytes:
            raise InvalidTensor(
                f"{what}: tensor name {name[:64]!r} is {size} UTF-8 bytes; names must be 1 to "
                f"{max_name_bytes} bytes long"
            )
        out[name] = _named(name, f"tensor {name!r} in {what}", value, max_elements)
    return out


def encode_tensor(a: npt.NDArray[Any]) -> dict[str, Any]:
    """A JSON tensor whose `data` stays a numpy array, for orjson's fast numpy path.

    orjson writes float32 with the shortest digits that round-trip in float32 and
    non-finite values as `null` (JSON has no NaN); safetensors carries exact bits.
    """
    arr = np.asarray(a)
    name = _ENCODED.get((arr.dtype.kind, arr.dtype.itemsize))
    if name is None:
        raise InvalidTensor(f"dtype {arr.dtype} cannot be written as a JSON tensor")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return {"shape": list(arr.shape), "dtype": name, "data": arr.ravel()}


def encode_tensors(tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, dict[str, Any]]:
    """Encode every tensor of a mapping, keeping its order."""
    return {name: encode_tensor(a) for name, a in tensors.items()}


def dumps(obj: Any) -> bytes:
    """Serialise a response body; numpy arrays are written directly by orjson."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        raise Problem(f"the response could not be serialised as JSON: {exc}") from None
