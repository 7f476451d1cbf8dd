"""Replay the torch reference trajectories (testdata/torch/, from testdata/gen_torch_vectors.py).

torch is not imported: the recorded numbers are the reference, so this runs wherever optd does.
float64: every checkpoint's params, the final slots and per-param steps, to 1e-10 relative;
float32: the params after 200 steps, to 1e-5 relative (DESIGN.md §2).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.optim import list_optimizers
from app.optim.local import LocalOptimizer

DATA = Path(__file__).resolve().parents[1] / "testdata" / "torch"
TORCH_BACKED = ("sgd", "adam", "adamw", "nadam", "radam", "adamax", "adagrad", "rmsprop")
# optd's hyperparameters beyond torch's, per optimizer (DESIGN.md §2)
EXTRAS = {
    "sgd": set(),
    "adam": {"bias_correction"},
    "adamw": {"bias_correction"},
    "nadam": {"bias_correction"},
    "radam": {"bias_correction", "rho_threshold"},
    "adamax": {"bias_correction"},
    "adagrad": set(),
    "rmsprop": set(),
}


def _load(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text())


INPUTS = _load("inputs")
TORCH_DEFAULTS = _load("defaults")["defaults"]
SHAPES = {n: tuple(p["shape"]) for n, p in INPUTS["params"].items()}
CASES = [(opt, case) for opt in TORCH_BACKED for case in _load(opt)["cases"]]
IDS = [f"{opt}-{case['id']}" for opt, case in CASES]


def initial_params(dtype: type[np.floating[Any]]) -> dict[str, np.ndarray]:
    return {
        n: np.array(p["data"], dtype=np.float64).reshape(p["shape"]).astype(dtype)
        for n, p in INPUTS["params"].items()
    }


def grads_for(case: dict[str, Any], i: int, dtype: type[np.floating[Any]]) -> dict[str, Any]:
    """The gradients of step i (1-based) exactly as the generator fed them to torch."""
    scale = case["grad_scale"][i - 1] if "grad_scale" in case else None
    out = {}
    for n, flat in INPUTS["grads"][i - 1].items():
        if i in case.get("skip", {}).get(n, ()):
            continue  # grad None in torch: the param is absent from this step
        g = np.array(flat, dtype=np.float64).reshape(SHAPES[n])
        if scale is not None:
            g = g * scale
        out[n] = g.astype(dtype)
    return out


def make(opt: str, case: dict[str, Any], dtype: str) -> LocalOptimizer:
    return LocalOptimizer(
        opt,
        params=initial_params(np.float64 if dtype == "float64" else np.float32),
        hyperparams=copy.deepcopy(case["hyperparams"]),
        dtype=dtype,
        groups=copy.deepcopy(case.get("groups", [])),
        schedule=copy.deepcopy(case.get("schedule")),
        max_grad_norm=case.get("max_grad_norm"),
        check_finite=False,
    )


def assert_close(
    actual: Any,
    expected: list[float],
    shape: tuple[int, ...],
    rtol: float,
    atol_rel: float,
    what: str,
) -> None:
    """rtol on every element; an atol only at atol_rel times the array's largest magnitude,
    so values that are ~0 (a zero gradient, a param crossing zero) do not need rtol."""
    exp = np.array(expected, dtype=np.float64).reshape(shape)
    act = np.asarray(actual)
    assert act.shape == shape, f"{what}: shape {act.shape} != {shape}"
    scale = float(np.max(np.abs(exp))) if exp.size else 0.0
    np.testing.assert_allclose(act, exp, rtol=rtol, atol=atol_rel * scale, err_msg=what)


@pytest.mark.parametrize(("opt", "case"), CASES, ids=IDS)
def test_float64_trajectory(opt: str, case: dict[str, Any]) -> None:
    ref = case["float64"]
    lo = make(opt, case, "float64")
    for i in range(1, ref["steps"] + 1):
        info = lo.step(grads_for(case, i, np.float64))
        assert info.step == i
        if "lrs" in ref:
            assert info.lr == pytest.approx(ref["lrs"][i - 1], rel=1e-12), f"lr at step {i}"
        if "grad_norms" in ref:
            assert info.grad_norm == pytest.approx(ref["grad_norms"][i - 1], rel=1e-12)
        if str(i) in ref["checkpoints"]:
            params = lo.params
            for n, expected in ref["checkpoints"][str(i)].items():
                assert params[n].dtype == np.float64
                assert_close(params[n], expected, SHAPES[n], 1e-10, 1e-12, f"{n} at step {i}")
    assert lo.param_steps == ref["param_steps"]
    for n, slots in ref["slots"].items():
        for slot, expected in slots.items():
            assert_close(lo.slot(slot, n), expected, SHAPES[n], 1e-10, 1e-12, f"{slot}[{n}]")


@pytest.mark.parametrize(("opt", "case"), CASES, ids=IDS)
def test_float32_trajectory(opt: str, case: dict[str, Any]) -> None:
    ref = case["float32"]
    lo = make(opt, case, "float32")
    for i in range(1, ref["steps"] + 1):
        lo.step(grads_for(case, i, np.float32))
    params = lo.params
    for n, expected in ref["params"].items():
        assert params[n].dtype == np.float32
        assert_close(params[n], expected, SHAPES[n], 1e-5, 1e-6, f"{n} after {ref['steps']}")


@pytest.mark.parametrize("opt", TORCH_BACKED)
def test_defaults_equal_torch(opt: str) -> None:
    ours = {o["name"]: o["defaults"] for o in list_optimizers()}[opt]
    theirs = TORCH_DEFAULTS[opt]  # betas already a list, as in optd's JSON
    assert set(ours) - set(theirs) == EXTRAS[opt]
    assert {k: ours.get(k) for k in theirs} == theirs
    for k, v in theirs.items():
        assert type(ours[k]) is type(v) or {type(ours[k]), type(v)} <= {int, float}, k


def test_reference_data_is_complete() -> None:
    """Guards against a generator change that silently drops cases or coverage."""
    assert INPUTS["torch_version"].startswith("2.13.0")
    assert set(TORCH_DEFAULTS) == set(TORCH_BACKED)
    ids = set(IDS)
    for needed in (
        "sgd-subset_momentum",
        "adam-subset",
        "nadam-subset",
        "adam-groups",
        "sgd-groups",
        "adam-clip",
        "adam-schedule_step",
        "adam-schedule_exponential",
        "adam-schedule_cosine",
        "radam-default",
        "rmsprop-centered_momentum",
    ):
        assert needed in ids
    for opt, case in CASES:
        if "skip" in case:
            steps = case["float64"]["param_steps"]
            assert steps["b"] < steps["w"] == case["float64"]["steps"], (opt, case["id"])
