"""Tensors on the wire: safetensors bodies and JSON `{"shape", "dtype", "data"}` tensors.

Encoding uses the `safetensors` package. Decoding is our own strict reader because
the package returns neither `__metadata__` (which carries the step's version, lr and
the checkpoint's meta document) nor writable arrays: here the data section is copied
once into a `bytearray` and every tensor is a writable view of it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save as _st_save

Array = npt.NDArray[Any]

SAFETENSORS = "application/x-safetensors"
JSON = "application/json"

_ST_DTYPES: dict[str, np.dtype[Any]] = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits, widened to float32 below
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_JSON_DTYPES = {"float16": "<f2", "bfloat16": "<f4", "float32": "<f4", "float64": "<f8"}


def as_array(value: Any, what: str) -> Array:
    """A numpy array for a parameter or gradient: floats keep their dtype, integers and
    booleans become float64 (the server takes only floating point tensors)."""
    arr = np.asarray(value)
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"{what}: expected a float array, got dtype {arr.dtype}")
    return arr


def as_arrays(tensors: Mapping[str, Any], what: str) -> dict[str, Array]:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"{what}: expected a mapping of names to arrays")
    return {str(name): as_array(v, f"{what}[{name!r}]") for name, v in tensors.items()}


def encode_safetensors(tensors: Mapping[str, Array], metadata: Mapping[str, str] | None) -> bytes:
    # not np.ascontiguousarray: it turns a 0-d array (a scalar parameter) into shape (1,)
    contiguous = {
        name: arr if arr.flags.c_contiguous else np.array(arr, order="C")
        for name, arr in tensors.items()
    }
    return _st_save(contiguous, metadata=dict(metadata) if metadata else None)


def _fail(message: str) -> ValueError:
    return ValueError(f"malformed safetensors response: {message}")


def decode_safetensors(body: bytes) -> tuple[dict[str, Array], dict[str, str]]:
    """Tensors (writable, in the body's order) and `__metadata__` of a safetensors body."""
    if len(body) < 8:
        raise _fail(f"{len(body)} bytes")
    n = int.from_bytes(body[:8], "little")
    if n > len(body) - 8:
        raise _fail(f"header length {n} exceeds the body")
    try:
        header = json.loads(body[8 : 8 + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _fail("header is not an object")
    raw_meta = header.pop("__metadata__", None) or {}
    if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
        raise _fail("__metadata__ must map strings to strings")
    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in _ST_DTYPES:
            raise _fail(f"tensor {name!r} has no supported dtype")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise _fail(f"tensor {name!r} has a bad shape")
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise _fail(f"tensor {name!r} has bad data_offsets")
        begin, end = offsets
        dtype = _ST_DTYPES[entry["dtype"]]
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end):
            raise _fail(f"tensor {name!r} has bad data_offsets")
        if math.prod(shape) * dtype.itemsize != end - begin:
            raise _fail(f"tensor {name!r}: shape {shape} does not match its byte length")
        entries.append((begin, end, name, entry["dtype"], shape))
    entries.sort(key=lambda e: (e[0], e[1]))
    data = bytearray(memoryview(body)[8 + n :])
    pos = 0
    for begin, end, name, _, _ in entries:
        if begin != pos:
            raise _fail(f"tensor {name!r} is not packed after the previous one")
        pos = end
    if pos != len(data):
        raise _fail(f"tensors cover {pos} bytes of {len(data)}")
    out: dict[str, Array] = {}
    for begin, end, name, code, shape in entries:
        dtype = _ST_DTYPES[code]
        flat = np.frombuffer(data, dtype, (end - begin) // dtype.itemsize, begin)
        if code == "BF16":
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        out[name] = flat.reshape(shape)
    return out, dict(raw_meta)


def encode_json_tensor(arr: Array) -> dict[str, Any]:
    name = {2: "float16", 4: "float32", 8: "float64"}.get(arr.dtype.itemsize, "float64")
    if arr.dtype.kind != "f":
        name = "float64"
    return {"shape": list(arr.shape), "dtype": name, "data": arr.ravel().tolist()}


def encode_json_tensors(tensors: Mapping[str, Array]) -> dict[str, dict[str, Any]]:
    return {name: encode_json_tensor(arr) for name, arr in tensors.items()}


def decode_json_tensor(name: str, obj: Any) -> Array:
    if isinstance(obj, dict):
        dtype = _JSON_DTYPES.get(str(obj.get("dtype", "float64")), "<f8")
        data = np.asarray(obj.get("data", []), dtype=dtype)
        shape = obj.get("shape")
        return data.reshape(shape if isinstance(shape, list) else data.shape)
    try:
        return np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed JSON tensor {name!r} in the response ({exc})") from None


def decode_json_tensors(obj: Any) -> dict[str, Array]:
    if not isinstance(obj, dict):
        raise ValueError("malformed response: expected an object of tensors")
    return {str(name): decode_json_tensor(str(name), value) for name, value in obj.items()}


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """Compact JSON (numpy scalars and arrays allowed). NaN and Infinity are written as
    such so that the server, not the client, names the offending tensor (422)."""
    return json.dumps(obj, separators=(",", ":"), default=_default).encode()


def metadata_value(meta: Mapping[str, str], key: str) -> Any:
    """A `__metadata__` value: the server writes non-string fields JSON-encoded."""
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw
