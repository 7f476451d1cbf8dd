"""Write the safetensors golden files with the reference implementation.

Run from the repository root:  python testdata/gen_safetensors_golden.py
Needs numpy, safetensors and torch (only for BF16, which numpy lacks). The bytes
come from `safetensors.numpy.save` / `safetensors.torch.save`, so every SDK can
check its reader and writer against them. `manifest.json` lists, per file, the
tensors in file (offset) order with dtype, shape and exact values, the metadata,
and the sha256 of the bytes. Metadata has one key per file: the reference keeps
it in a Rust HashMap, so several keys would come out in a random order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors.numpy import save
from safetensors.torch import save as torch_save

OUT = Path(__file__).resolve().parent / "safetensors"


def _numpy_files() -> dict[str, tuple[dict[str, np.ndarray], dict[str, str] | None]]:
    f32 = np.float32
    return {
        # float32 only, no __metadata__; a scalar, an empty tensor, 1-3 dims.
        "f32_shapes.safetensors": (
            {
                "matrix": (np.arange(6, dtype=f32) * 0.5 - 1).reshape(2, 3),
                "scalar": np.array(3.25, dtype=f32),
                "empty": np.zeros((0,), dtype=f32),
                "vector": np.array([0.1, -2.5, 1e-30, 3.4e38, -0.0], dtype=f32),
                "cube": np.linspace(-1, 1, 6, dtype=f32).reshape(2, 1, 3),
            },
            None,
        ),
        # float64 / float32 / float16 with __metadata__ and names as torch writes them.
        "mixed_meta.safetensors": (
            {
                "layer.0.weight": np.array([[1 / 3, -2.0], [1e-300, 2.0**60]], dtype=np.float64),
                "layer.0.bias": np.array([0.1, 0.2, 0.3], dtype=f32),
                "emb.weight": np.array([65504.0, -6e-8, 0.5, 1 / 3], dtype=np.float16),
                "ß.gamma": np.array([[], []], dtype=f32),
            },
            {"format": "optd-golden"},
        ),
        # a checkpoint-like file: per-tensor step counts next to slots.
        "checkpoint_ints.safetensors": (
            {
                "step": np.array([1, 200, 2**40], dtype=np.int64),
                "count": np.array(7, dtype=np.int32),
                "exp_avg": np.array([0.25, -0.125, 4.0], dtype=f32),
            },
            {"kind": "checkpoint"},
        ),
        "empty.safetensors": ({}, None),
        "metadata_only.safetensors": ({}, {"note": 'no tensors \u00e9\n"quoted"'}),
    }


def _bf16_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    tensors = {
        "w": torch.tensor([[1.0, -2.5, 0.15625], [256.0, -0.0, 1.5e-5]], dtype=torch.bfloat16),
        "b": torch.tensor([3.0, 0.1], dtype=torch.bfloat16),
        "scale": torch.tensor([0.5, 2.0], dtype=torch.float32),
    }
    return torch_save(tensors), tensors


def _entry(dtype: str, shape: list[int], values: list[Any]) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data": values}


def _manifest(blob: bytes, tensors: dict[str, Any], meta: dict[str, str] | None) -> dict[str, Any]:
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    order = sorted(header, key=lambda k: header[k]["data_offsets"])  # file order
    described = {}
    for name in order:
        t = tensors[name]
        flat = t.double().reshape(-1).tolist() if isinstance(t, torch.Tensor) else None
        if flat is None:
            flat = t.reshape(-1).tolist()
        described[name] = _entry(header[name]["dtype"], header[name]["shape"], flat)
    return {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "metadata": meta,
        "order": order,
        "tensors": described,
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    manifest: dict[str, Any] = {"safetensors_version": safetensors.__version__, "files": {}}
    for name, (tensors, meta) in _numpy_files().items():
        blob = save(tensors, metadata=meta)
        (OUT / name).write_bytes(blob)
        manifest["files"][name] = _manifest(blob, tensors, meta)
    blob, ttensors = _bf16_file()
    (OUT / "bf16.safetensors").write_bytes(blob)
    manifest["files"]["bf16.safetensors"] = _manifest(blob, ttensors, None)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (OUT / "manifest.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(manifest['files'])} files to {OUT}")


if __name__ == "__main__":
    main()
