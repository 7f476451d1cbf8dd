"""Write testdata/wire/compress.json: bfloat16 and int8-block golden vectors (DESIGN §3).

Run from the repository root:  .venv/bin/python testdata/gen_compress_vectors.py
bfloat16 comes from the server (`app.codec.compress.bfloat16_bits`), int8-block from the
Python SDK's encoder (`optd_client._compress.int8_block`) and its dequantized values
from the server (`app.codec.compress.dequantize`); `tests/test_compress.py` checks that
the file is current and that the two agree. Values travel as little-endian hex so that
every bit (-0, ties, subnormals) is pinned; every SDK encodes them to the same bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "clients" / "python"))

from optd_client import _compress  # noqa: E402

from app.codec import compress  # noqa: E402

OUT = ROOT / "testdata" / "wire" / "compress.json"
f32 = np.float32


def _bits(*words: int) -> np.ndarray:
    return np.array(words, dtype=np.uint32).view(np.float32)


def bf16_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(17)
    return [
        ("exact", np.array([0.0, -0.0, 1.0, -2.5, 0.15625, 65280.0], dtype=f32)),
        # ties: 0x3F808000 is halfway between 0x3F80 and 0x3F81 (to even: 0x3F80);
        # 0x3F818000 halfway between 0x3F81 and 0x3F82 (to even: 0x3F82)
        ("ties_to_even", _bits(0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000)),
        ("round_up_down", _bits(0x3F808001, 0x3F807FFF, 0x3F80FFFF, 0x7F7FFFFF)),
        (
            "subnormal_inf_nan",
            _bits(0x00000001, 0x00010000, 0x007FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000),
        ),
        ("random", rng.standard_normal(16).astype(f32) * f32(3)),
    ]


def int8_cases() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(2501)
    return [
        ("one_block", np.array([0.5, -1.0, 0.25, 0.0, -0.0, 1.0 / 3.0], dtype=f32), 8),
        ("ties", np.array([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5], dtype=f32), 8),
        ("partial_last_block", rng.standard_normal(10).astype(f32), 4),
        ("zero_block", np.array([0.0, 0.0, 0.0, 1e-3, -2e-3, 5e-4], dtype=f32), 3),
        ("matrix", (rng.standard_normal((3, 5)) * 0.01).astype(f32), 4),
        ("tiny", np.array([1e-38, -3e-39, 1e-45, 2e-45], dtype=f32), 2),
        ("block_256", rng.standard_normal(600).astype(f32), 256),
    ]


def hexof(a: np.ndarray, dtype: str) -> str:
    return np.ascontiguousarray(a).astype(dtype).tobytes().hex()


def build() -> dict[str, Any]:
    bf16 = []
    for name, x in bf16_cases():
        bits = compress.bfloat16_bits(x)
        bf16.append(
            {"name": name, "float32_hex": hexof(x, "<f4"), "bfloat16_hex": hexof(bits, "<u2")}
        )
    int8 = []
    for name, x, block in int8_cases():
        q, scale = _compress.int8_block(x, block)
        body = {name: q, name + compress.SCALE_SUFFIX: scale}
        meta = {compress.QUANT_KEY: compress.INT8_BLOCK, compress.BLOCK_KEY: str(block)}
        deq = compress.dequantize(body, meta)[name]
        assert np.array_equal(deq, _compress.dequantize(q, scale, block))
        int8.append(
            {
                "name": name,
                "block": block,
                "shape": list(x.shape),
                "float32_hex": hexof(x, "<f4"),
                "int8_hex": hexof(q, "i1"),
                "scale_hex": hexof(scale, "<f4"),
                "dequantized_hex": hexof(deq, "<f4"),
            }
        )
    return {
        "about": "testdata/gen_compress_vectors.py; conventions: DESIGN.md §3, compressed tensors",
        "bfloat16": bf16,
        "int8_block": int8,
    }


def main(out: Path | None = None) -> None:
    if out is None:
        out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(json.dumps(build(), indent=1) + "\n", encoding="utf-8")
    if __name__ == "__main__":
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
