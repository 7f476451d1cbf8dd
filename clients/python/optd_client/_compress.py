"""Compressed gradients on the wire: bfloat16 and int8-block (DESIGN.md §3).

The same arithmetic as the TypeScript and Go SDKs, pinned by testdata/wire/compress.json:

- bfloat16: round float32 to nearest even on the bits, `(b + 0x7FFF + ((b >> 16) & 1)) >> 16`.
- int8-block: row-major flat float32 values cut in blocks of `block`; per block
  `scale = float32(absmax / 127)`, `q = round_half_even(float32(x / scale))` clamped to
  [-127, 127] (0 where scale is 0). The server computes `q * scale` in float32.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
GradDtype = Literal["float32", "bfloat16", "int8"]

QUANT_META = {"optd.quant": "int8-block"}
SCALE_SUFFIX = ".__scale__"
DEFAULT_BLOCK = 256


def bfloat16_bits(arr: Any) -> npt.NDArray[np.uint16]:
    f = np.ascontiguousarray(arr, dtype=np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out.reshape(f.shape)


def bfloat16_round(arr: Any) -> npt.NDArray[np.float32]:
    """`arr` rounded to bfloat16 values, as float32."""
    return (bfloat16_bits(arr).astype(np.uint32) << 16).view(np.float32)


def int8_block(arr: Any, block: int = DEFAULT_BLOCK) -> tuple[npt.NDArray[np.int8], Array]:
    """Quantize: (int8 values of `arr`'s shape, float32 scales of shape [ceil(n/block)])."""
    if not 1 <= block <= 1 << 20:
        raise ValueError(f"block must be 1 to 2**20, got {block}")
    x = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("cannot quantize non-finite values")
    flat = x.reshape(-1)
    n = flat.size
    blocks = -(-n // block)
    padded = np.zeros(blocks * block, dtype=np.float32)
    padded[:n] = flat
    rows = padded.reshape(blocks, block)
    scale = (np.abs(rows).max(axis=1) if blocks else np.zeros(0, np.float32)) / np.float32(127)
    scale = scale.astype(np.float32)
    safe = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    q = np.rint(rows / safe[:, None]).astype(np.float32)
    q = np.clip(q, -127, 127)
    q[scale == 0] = 0
    return q.reshape(-1)[:n].astype(np.int8).reshape(x.shape), scale


def dequantize(q: Array, scale: Array, block: int = DEFAULT_BLOCK) -> npt.NDArray[np.float32]:
    """What the server makes of (q, scale): `q * scale[i // block]` in float32."""
    n = q.size
    per = np.repeat(scale.astype(np.float32), block)[:n]
    out: npt.NDArray[np.float32] = (q.reshape(-1).astype(np.float32) * per).reshape(q.shape)
    return out


def _header_entry(name: str, code: str, shape: tuple[int, ...], begin: int, size: int) -> Any:
    return name, {"dtype": code, "shape": list(shape), "data_offsets": [begin, begin + size]}


def encode(
    tensors: Mapping[str, Array],
    how: GradDtype,
    metadata: Mapping[str, str] | None = None,
    block: int = DEFAULT_BLOCK,
) -> bytes:
    """A safetensors body of gradients in `how` ("float32", "bfloat16" or "int8")."""
    parts: list[tuple[str, str, tuple[int, ...], bytes]] = []
    meta = dict(metadata or {})
    for name, value in tensors.items():
        arr = np.asarray(value)
        if how == "bfloat16":
            parts.append((name, "BF16", arr.shape, bfloat16_bits(arr).astype("<u2").tobytes()))
        elif how == "int8":
            q, scale = int8_block(arr, block)
            parts.append((name, "I8", arr.shape, q.tobytes()))
            parts.append((name + SCALE_SUFFIX, "F32", scale.shape, scale.astype("<f4").tobytes()))
        else:
            parts.append((name, "F32", arr.shape, arr.astype("<f4").tobytes()))
    if how == "int8":
        meta |= {**QUANT_META, "optd.block": str(block)}
    # wide dtypes first, as the reference writer orders them (alignment)
    width = {"F32": 4, "BF16": 2, "I8": 1}
    parts.sort(key=lambda p: -width[p[1]])
    header: dict[str, Any] = {"__metadata__": meta} if meta else {}
    offset = 0
    for name, code, shape, data in parts:
        key, entry = _header_entry(name, code, shape, offset, len(data))
        header[key] = entry
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(p[3] for p in parts)
