"""The safetensors wire format, read zero-copy and written without copies.

We parse the format ourselves instead of calling the `safetensors` package so that
tensors come back as `numpy.frombuffer` views over the request body (the package
copies every tensor) and so that every failure is an `app.problems` exception with a
detail a client can act on. The checks mirror the reference parser
(huggingface/safetensors, `safetensors/src/tensor.rs`): 8-byte little-endian header
length, UTF-8 JSON object header, `shape x itemsize == end - begin` with overflow
checks, data regions sorted by offset that start at 0 and follow each other with no
gap or overlap, and no byte after the last tensor. Unknown fields in an entry are
ignored, as there. We are stricter in three places: repeated tensor names or metadata
keys (the reference keeps the last one), empty or over-long names, and a lower header
limit (`max_header_bytes`; the reference allows 100 MB).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from app.problems import InvalidBody, InvalidTensor, TooLarge

FLOAT_DTYPES: tuple[str, ...] = ("F16", "BF16", "F32", "F64")
INT_DTYPES: tuple[str, ...] = ("I32", "I64")
"""Integer dtypes, for checkpoints (per-tensor step counts); pass them in `allowed_dtypes`."""

_LAYOUT: dict[str, np.dtype[Any]] = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; widened to float32 on decode
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),  # int8-block quantized gradients only (app.codec.compress)
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}
# Every dtype the reference knows, so that "not allowed here" differs from "unknown".
_REFERENCE_DTYPES = frozenset(
    "BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ "
    "I16 U16 F16 BF16 I32 U32 F32 C64 F64 I64 U64".split()
)
_ENCODABLE = {("f", 2): "F16", ("f", 4): "F32", ("f", 8): "F64", ("i", 4): "I32", ("i", 8): "I64"}
_ENCODABLE[("u", 2)] = "BF16"  # uint16 arrays are bfloat16 bits (compress.bfloat16_bits)
_USIZE_MAX = 2**64 - 1  # the reference reads sizes as u64 and fails on overflow
_MAX_NDIM = 64  # numpy's limit

Array = npt.NDArray[Any]


class _DupDict(dict[str, Any]):
    """A JSON object that repeated a key; kept so the error can say which level it was."""

    dup: str = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # orjson would silently keep the last duplicate, so the header goes through the
    # stdlib parser with this hook (about 2 ms per 1000 tensors).
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    out, seen = _DupDict(d), set()
    for key, _ in pairs:
        if key in seen:
            out.dup = key
            break
        seen.add(key)
    return out


def _as_bytes(body: bytes | bytearray | memoryview) -> memoryview:
    try:
        view = memoryview(body)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
    except TypeError as exc:
        raise InvalidBody(f"the safetensors body must be contiguous bytes ({exc})") from None
    if not view.c_contiguous:
        raise InvalidBody("the safetensors body must be contiguous bytes, not a strided view")
    return view


def _header(view: memoryview, max_header_bytes: int) -> tuple[int, Any]:
    if len(view) < 8:
        raise InvalidBody(
            f"body is {len(view)} bytes, too short for safetensors: it must start with an "
            "8-byte little-endian header length; send a file written by safetensors.save"
        )
    n = int.from_bytes(view[:8], "little")
    if n > len(view) - 8:
        raise InvalidBody(
            f"safetensors header length {n} is larger than the {len(view) - 8} bytes that "
            "follow it; the body is truncated or not a safetensors file"
        )
    if n > max_header_bytes:
        raise TooLarge(
            f"safetensors header is {n} bytes; the limit is {max_header_bytes}; "
            "send fewer tensors per request or shorter metadata"
        )
    raw = bytes(view[8 : 8 + n])
    try:
        # orjson first: it is as strict as the reference's serde_json (UTF-8, no lone
        # surrogates, no out-of-range numbers) even inside fields we then ignore.
        orjson.loads(raw)
        text = raw.decode("utf-8")
        return n, json.loads(text, object_pairs_hook=_pairs)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidBody(
            f"safetensors header is not valid UTF-8 JSON ({exc}); "
            "send a file written by a safetensors library"
        ) from None


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:  # the reference reads `null` as absent
        return {}
    if not isinstance(raw, dict):
        raise InvalidBody("safetensors __metadata__ must be a JSON object of strings")
    if isinstance(raw, _DupDict):
        raise InvalidBody(f"safetensors __metadata__ repeats the key {raw.dup!r}")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise InvalidBody(
                f"safetensors __metadata__ value for {key!r} must be a string, "
                f"got {type(value).__name__}; encode numbers as strings"
            )
    return raw


def _uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _USIZE_MAX


def _entry(
    name: str, raw: Any, allowed: tuple[str, ...], max_name_bytes: int
) -> tuple[str, list[int], int, int]:
    """Validate one header entry; returns (dtype, shape, begin, end)."""
    size = len(name.encode("utf-8"))  # orjson has ruled out lone surrogates
    if not 0 < size <= max_name_bytes:
        raise InvalidTensor(
            f"tensor name {name[:64]!r} is {size} UTF-8 bytes; names must be 1 to "
            f"{max_name_bytes} bytes long"
        )
    label = f"tensor {name!r}"
    if not isinstance(raw, dict):
        raise InvalidTensor(
            f"{label}: header entry must be an object with dtype, shape, data_offsets"
        )
    if isinstance(raw, _DupDict):
        raise InvalidBody(f"{label}: header entry repeats the field {raw.dup!r}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in raw]
    if missing:
        raise InvalidTensor(f"{label}: header entry lacks {', '.join(missing)}", tensor=name)
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in allowed:
        known = isinstance(dtype, str) and dtype in _REFERENCE_DTYPES
        what = "is not accepted here" if known else "is not a safetensors dtype"
        raise InvalidTensor(
            f"{label}: dtype {dtype!r} {what}; use one of {', '.join(allowed)}", tensor=name
        )
    if not (type(shape) is list and len(shape) <= _MAX_NDIM and all(map(_uint, shape))):
        raise InvalidTensor(
            f"{label}: shape must be a list of at most {_MAX_NDIM} non-negative integers, "
            f"got {str(shape)[:100]}",
            tensor=name,
        )
    if not (type(offsets) is list and len(offsets) == 2 and all(map(_uint, offsets))):
        raise InvalidTensor(
            f"{label}: data_offsets must be [begin, end] with non-negative integers, "
            f"got {str(offsets)[:100]}",
            tensor=name,
        )
    begin, end = offsets
    if end < begin:
        raise InvalidBody(f"{label}: data_offsets [{begin}, {end}] end before they begin")
    nbytes = _LAYOUT[dtype].itemsize
    for dim in shape:  # checked product, as the reference does (no early exit on 0)
        nbytes *= dim
        if nbytes > _USIZE_MAX:
            raise InvalidTensor(f"{label}: shape {shape} overflows a 64-bit size", tensor=name)
    if nbytes != end - begin:
        raise InvalidTensor(
            f"{label}: shape {shape} of {dtype} needs {nbytes} bytes, but data_offsets "
            f"[{begin}, {end}] span {end - begin}; fix the shape or the offsets",
            tensor=name,
        )
    return dtype, shape, begin, end


def decode(
    body: bytes | bytearray | memoryview,
    *,
    max_header_bytes: int = 16 * 2**20,
    max_tensors: int = 100_000,
    max_name_bytes: int = 512,
    allowed_dtypes: tuple[str, ...] = FLOAT_DTYPES,
) -> tuple[dict[str, Array], dict[str, str]]:
    """Parse a safetensors body into arrays (in data-offset order) and its `__metadata__`.

    Arrays are read-only views over `body` (BF16 is widened to a new float32 array), so
    `body` must not be mutated while they are in use. Finiteness is not checked here;
    call `check_finite`.
    """
    view = _as_bytes(body)
    n, header = _header(view, max_header_bytes)
    if not isinstance(header, dict):
        raise InvalidBody(f"safetensors header must be a JSON object, got {type(header).__name__}")
    if isinstance(header, _DupDict):
        if header.dup == "__metadata__":
            raise InvalidBody("safetensors header has two __metadata__ objects")
        raise InvalidTensor(
            f"safetensors header names the tensor {header.dup!r} twice; names must be unique"
        )
    metadata = _metadata(header.pop("__metadata__", None))
    if len(header) > max_tensors:
        raise TooLarge(f"safetensors body has {len(header)} tensors; the limit is {max_tensors}")
    allowed = tuple(d for d in allowed_dtypes if d in _LAYOUT)
    entries = [(name, *_entry(name, raw, allowed, max_name_bytes)) for name, raw in header.items()]
    entries.sort(key=lambda e: (e[3], e[4]))
    data_len, pos = len(view) - 8 - n, 0
    for name, _, _, begin, end in entries:
        if begin != pos:
            how = "overlaps the previous tensor" if begin < pos else "leaves a gap"
            raise InvalidBody(
                f"tensor {name!r}: data_offsets [{begin}, {end}] {how}, which should begin at "
                f"{pos}; tensors must be packed back to back from offset 0"
            )
        pos = end
    if pos != data_len:
        what = f"{data_len - pos} stray bytes follow" if pos < data_len else "the body is truncated"
        raise InvalidBody(
            f"safetensors tensors cover {pos} data bytes but the body holds {data_len}: {what}; "
            "the file must end exactly where the last tensor does"
        )
    out: dict[str, Array] = {}
    base = 8 + n
    for name, dtype, shape, begin, end in entries:
        layout = _LAYOUT[dtype]
        try:
            flat = np.frombuffer(view, layout, (end - begin) // layout.itemsize, base + begin)
            if dtype == "BF16":
                flat = (flat.astype(np.uint32) << 16).view(np.float32)
            out[name] = flat.reshape(shape)
        except ValueError as exc:
            raise InvalidTensor(f"tensor {name!r}: shape {shape} is not usable ({exc})") from None
    return out, metadata


def encode_parts(
    tensors: Mapping[str, Array], metadata: Mapping[str, str] | None = None
) -> list[bytes | memoryview]:
    """Serialise as header bytes followed by one buffer per tensor, in the given order.

    Contiguous little-endian arrays are not copied: their memoryviews alias the arrays,
    so send the parts before mutating them. The reference writer instead sorts tensors
    by dtype width (widest first) then name; given tensors in that order (e.g. straight
    from `decode`), the bytes are identical. Keep wide dtypes first to stay aligned.
    """
    header: dict[str, Any] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise InvalidTensor("safetensors __metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    parts: list[bytes | memoryview] = [b""]
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise InvalidTensor(f"cannot write a tensor named {name!r} to safetensors")
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InvalidTensor(f"tensor {name!r} is not an array ({exc})") from None
        code = _ENCODABLE.get((arr.dtype.kind, arr.dtype.itemsize))
        if code is None:
            raise InvalidTensor(
                f"tensor {name!r}: dtype {arr.dtype} cannot be written; "
                "use float16, float32, float64, int32 or int64"
            )
        little = arr.dtype.newbyteorder("<")
        if arr.dtype != little or not arr.flags.c_contiguous:
            arr = arr.astype(little, order="C")
        parts.append(arr.reshape(-1).view(np.uint8).data)
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    try:
        text = orjson.dumps(header)
    except orjson.JSONEncodeError as exc:
        raise InvalidTensor(f"cannot write the safetensors header: {exc}") from None
    text += b" " * (-len(text) % 8)  # the reference pads with spaces to 8 bytes
    parts[0] = len(text).to_bytes(8, "little") + text
    return parts


def encode(tensors: Mapping[str, Array], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise to one `bytes` object; see `encode_parts` for order and copying."""
    return b"".join(encode_parts(tensors, metadata))
