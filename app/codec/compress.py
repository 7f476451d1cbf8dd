"""Fewer bytes on the wire: bfloat16 out, int8 blockwise-quantized gradients in.

Both conventions are written down in DESIGN.md §3 ("Compressed tensors") precisely enough
for a client without an SDK, and pinned by the golden vectors in testdata/wire/compress.

- bfloat16 from float32 rounds to nearest, ties to even, on the bit pattern:
  `(bits + 0x7FFF + ((bits >> 16) & 1)) >> 16`; NaN stays a (quiet) NaN.
- int8-block: a float tensor `w` travels as an I8 tensor `w` of the same shape plus an F32
  tensor `w.__scale__` of shape `[ceil(n / block)]`; the row-major flat values are cut in
  blocks of `block` elements (the last may be shorter). The value is `q * scale[i // block]`
  in float32. The body's `__metadata__` says so: `{"optd.quant": "int8-block",
  "optd.block": "<block>"}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from app.problems import InvalidBody, InvalidTensor

Array = npt.NDArray[Any]

RESPONSE_DTYPES = ("float32", "bfloat16")
QUANT_KEY = "optd.quant"
BLOCK_KEY = "optd.block"
INT8_BLOCK = "int8-block"
SCALE_SUFFIX = ".__scale__"
MAX_BLOCK = 1 << 20


def bfloat16_bits(arr: Array) -> npt.NDArray[np.uint16]:
    """The bfloat16 bit patterns of `arr` (cast to float32 first), rounded to nearest even."""
    f = np.ascontiguousarray(arr, dtype=np.float32)
    bits = f.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():  # rounding could carry a NaN's payload into infinity
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded.reshape(f.shape)


def bfloat16_round(arr: Array) -> npt.NDArray[np.float32]:
    """Values rounded to bfloat16, as float32 (what the bits above decode to)."""
    bits = bfloat16_bits(arr)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _block(metadata: Mapping[str, str]) -> int:
    raw = metadata.get(BLOCK_KEY)
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 8:
        raise InvalidBody(
            f'__metadata__["{BLOCK_KEY}"] must be the block size as decimal digits '
            f"(1 to {MAX_BLOCK}), got {raw!r}"
        )
    block = int(raw)
    if not 1 <= block <= MAX_BLOCK:
        raise InvalidBody(f'__metadata__["{BLOCK_KEY}"] must be 1 to {MAX_BLOCK}, got {block}')
    return block


def dequantize(tensors: Mapping[str, Array], metadata: Mapping[str, str]) -> dict[str, Array]:
    """Undo the int8-block convention (see the module docstring); other tensors pass.

    Without `optd.quant` in the metadata an I8 tensor is refused (422): integers are not
    gradients. With it, every I8 tensor needs its scale and every scale its I8 tensor."""
    quant = metadata.get(QUANT_KEY)
    if quant is None:
        for name, arr in tensors.items():
            if arr.dtype == np.int8:
                raise InvalidTensor(
                    f"tensor {name!r}: I8 is accepted only as an int8-block quantized "
                    f'gradient (__metadata__ {{"{QUANT_KEY}": "{INT8_BLOCK}", '
                    f'"{BLOCK_KEY}": "256"}} and an F32 tensor {name + SCALE_SUFFIX!r})',
                    tensor=name,
                )
        return dict(tensors)
    if quant != INT8_BLOCK:
        raise InvalidBody(
            f'__metadata__["{QUANT_KEY}"] {quant[:64]!r} is not known; the only one is '
            f"{INT8_BLOCK!r}"
        )
    block = _block(metadata)
    out: dict[str, Array] = {}
    for name, arr in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            base = name[: -len(SCALE_SUFFIX)]
            if base not in tensors or tensors[base].dtype != np.int8:
                raise InvalidTensor(
                    f"tensor {name!r}: a scale without an I8 tensor {base!r}", tensor=name
                )
            continue
        if arr.dtype != np.int8:
            out[name] = arr
            continue
        out[name] = _dequantize_one(name, arr, tensors.get(name + SCALE_SUFFIX), block)
    return out


def _dequantize_one(name: str, q: Array, scale: Array | None, block: int) -> Array:
    if scale is None:
        raise InvalidTensor(
            f"tensor {name!r}: I8 values need an F32 tensor {name + SCALE_SUFFIX!r} "
            "(one absmax/127 scale per block)",
            tensor=name,
        )
    n = int(q.size)
    blocks = -(-n // block)
    if scale.dtype != np.float32 or scale.shape != (blocks,):
        raise InvalidTensor(
            f"tensor {name + SCALE_SUFFIX!r}: must be F32 of shape [{blocks}] "
            f"(ceil({n} / {block})), got {scale.dtype} {list(scale.shape)}",
            tensor=name + SCALE_SUFFIX,
        )
    if not np.isfinite(scale).all() or (scale < 0).any():
        raise InvalidTensor(
            f"tensor {name + SCALE_SUFFIX!r}: scales must be finite and >= 0",
            tensor=name + SCALE_SUFFIX,
        )
    if (q.reshape(-1) == -128).any():
        raise InvalidTensor(
            f"tensor {name!r}: int8-block values are -127..127 (-128 is not used)", tensor=name
        )
    flat = q.reshape(-1).astype(np.float32)
    per = np.repeat(scale, block)[:n] if n else scale[:0]
    out: Array = (flat * per).reshape(q.shape)
    return out
