"""NAdam's `mu_product` in float64 sessions (issue #16 item 14), against live torch.

torch keeps `mu_product` (a running product of momentum coefficients) in the default
scalar dtype: float32 unless `torch.set_default_dtype(torch.float64)`. optd keeps it in
float64 (DESIGN.md §2): a float64 session equals torch run with the default dtype float64,
and differs from stock torch (float64 params, default dtype float32) by the float32
rounding of mu_product: ~1e-8 of the first update, below 1e-9 of the parameters' scale
over 200 steps. Both are asserted here, so a change to either side shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.optim.local import LocalOptimizer

INPUTS = json.loads((Path(__file__).parents[1] / "testdata/torch/inputs.json").read_text())
SHAPES = {n: tuple(p["shape"]) for n, p in INPUTS["params"].items()}
P0 = {n: np.array(p["data"], np.float64).reshape(SHAPES[n]) for n, p in INPUTS["params"].items()}
STEPS = 200
CASES = [{}, {"lr": 0.01, "momentum_decay": 0.05}, {"lr": 0.01, "weight_decay": 0.1}]


def grads(i: int) -> dict[str, np.ndarray]:
    return {n: np.array(g, np.float64).reshape(SHAPES[n]) for n, g in INPUTS["grads"][i].items()}


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def run_torch(hp: dict[str, Any], dtype: torch.dtype) -> tuple[list[dict[str, Any]], list[Any]]:
    """float64 params through torch.optim.NAdam (single-tensor path) with the given
    default dtype; the params after every step and the mu_product tensors after step 1."""
    with default_dtype(dtype):
        ps = {n: torch.tensor(v, dtype=torch.float64) for n, v in P0.items()}
        opt = torch.optim.NAdam(list(ps.values()), foreach=False, **hp)
        out, mu = [], []
        for i in range(STEPS):
            for n, p in ps.items():
                p.grad = torch.from_numpy(grads(i)[n])
            opt.step()
            out.append({n: p.numpy().copy() for n, p in ps.items()})
            if i == 0:
                mu = [opt.state[p]["mu_product"].clone() for p in ps.values()]
        return out, mu


def run_optd(hp: dict[str, Any]) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    opt = LocalOptimizer("nadam", P0, hp, dtype="float64", check_finite=False)
    out, mu = [], np.empty(0)
    for i in range(STEPS):
        opt.step(grads(i))
        out.append(opt.params)
        if i == 0:
            mu = opt.state.scalars["mu_product"].copy()
    return out, mu


def gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest difference relative to the tensor's scale (values cross zero)."""
    return max(float(np.max(np.abs(a[n] - b[n])) / np.max(np.abs(b[n]))) for n in a)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("hp", CASES)
def test_float64_session_equals_torch_with_default_dtype_float64(hp: dict[str, Any]) -> None:
    mine, mu = run_optd(hp)
    ref, ref_mu = run_torch(hp, torch.float64)
    assert all(t.dtype == torch.float64 for t in ref_mu)
    assert max(gap(a, b) for a, b in zip(mine, ref, strict=True)) < 1e-14
    assert mu.tolist() == [float(t) for t in ref_mu]


@pytest.mark.parametrize("hp", CASES)
def test_known_difference_from_stock_torch_is_small(hp: dict[str, Any]) -> None:
    mine, mu = run_optd(hp)
    stock, stock_mu = run_torch(hp, torch.float32)
    # the cause: stock torch's mu_product is optd's rounded to float32 (with the default
    # momentum_decay it underflows to 0 at step 132, when 1 - mu_product is 1 in both)
    assert all(t.dtype == torch.float32 for t in stock_mu)
    assert mu.astype(np.float32).tolist() == [float(t) for t in stock_mu] != mu.tolist()
    gaps = [gap(a, b) for a, b in zip(mine, stock, strict=True)]
    assert gaps[0] > 1e-12  # there from the first step (mu_product rounded to float32)
    assert max(gaps) < 1e-9  # measured 4e-10 at worst over these cases
    # the first update itself differs by ~1e-8 relative: float32 rounding of mu_1
    first = {n: mine[0][n] - P0[n] for n in P0}
    first_stock = {n: stock[0][n] - P0[n] for n in P0}
    assert 1e-9 < gap(first, first_stock) < 1e-7
