"""Properties every optimizer must have, over generated params, gradients and configs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.optim import get_optimizer
from app.optim.local import LocalOptimizer

# Configurations that switch on each optimizer's options (weight decay is added separately).
CONFIGS: dict[str, list[dict[str, Any]]] = {
    "sgd": [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.5, "dampening": 0.5},
    ],
    "adam": [{}, {"amsgrad": True}, {"decoupled_weight_decay": True}, {"bias_correction": False}],
    "adamw": [{}, {"amsgrad": True}],
    "nadam": [{}, {"decoupled_weight_decay": True}, {"momentum_decay": 0.01}],
    "radam": [{}, {"decoupled_weight_decay": True}, {"rho_threshold": 4.0}],
    "adamax": [{}, {"bias_correction": False}],
    "adagrad": [{}, {"lr_decay": 0.1, "initial_accumulator_value": 0.1}],
    "rmsprop": [{}, {"centered": True}, {"momentum": 0.9}, {"centered": True, "momentum": 0.9}],
    "adabelief": [{}, {"amsgrad": True}, {"decoupled_weight_decay": False}],
    "lion": [{}, {"betas": [0.95, 0.98]}],
}
NAMES = ("w", "b", "s")
Config = tuple[str, dict[str, Any]]
Problem = tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]
SETTINGS = settings(max_examples=50, deadline=None)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def configs(draw: st.DrawFn, weight_decay: bool = True) -> Config:
    opt = draw(st.sampled_from(sorted(CONFIGS)))
    hp = dict(draw(st.sampled_from(CONFIGS[opt])))
    hp["lr"] = draw(st.sampled_from([1e-4, 1e-3, 0.01, 0.1]))
    if weight_decay:
        hp["weight_decay"] = draw(st.sampled_from([0.0, 0.01, 0.5]))
    return opt, hp


@st.composite
def problems(draw: st.DrawFn, steps: int = 4) -> Problem:
    """Params of a few shapes (a scalar too) and `steps` gradients of moderate magnitude."""
    shapes = {"w": draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)), "b": (3,), "s": ()}
    params = {
        n: draw(hnp.arrays(np.float64, shape, elements=finite)) for n, shape in shapes.items()
    }
    grads = [
        {n: draw(hnp.arrays(np.float64, shape, elements=finite)) for n, shape in shapes.items()}
        for _ in range(steps)
    ]
    return params, grads


def slot_names(opt: str, hp: dict[str, Any]) -> tuple[str, ...]:
    o = get_optimizer(opt)
    return tuple(o.slot_names(o.validate(hp)))


def snapshot(lo: LocalOptimizer, opt: str, hp: dict[str, Any]) -> dict[str, Any]:
    slots = slot_names(opt, hp)
    return {
        "params": lo.params,
        "steps": lo.param_steps,
        "slots": {(s, n): lo.slot(s, n) for s in slots for n in NAMES},
    }


def assert_same(a: dict[str, Any], b: dict[str, Any], names: tuple[str, ...] = NAMES) -> None:
    for n in names:
        np.testing.assert_array_equal(a["params"][n], b["params"][n], err_msg=n)
        assert a["steps"][n] == b["steps"][n], n
    for (s, n), v in a["slots"].items():
        if n in names:
            np.testing.assert_array_equal(v, b["slots"][(s, n)], err_msg=f"{s}[{n}]")


@SETTINGS
@given(configs(), problems(), st.sampled_from(["float32", "float64"]))
def test_finite_inputs_give_finite_outputs(cfg: Config, prob: Problem, dtype: str) -> None:
    opt, hp = cfg
    params, grads = prob
    lo = LocalOptimizer(opt, params=params, hyperparams=hp, dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # fail at the source
        for g in grads:
            lo.step(g)
    for n, p in lo.params.items():
        assert np.all(np.isfinite(p)), n


@SETTINGS
@given(configs(), problems(), st.sampled_from(["float32", "float64"]))
def test_maximize_equals_negated_gradient(cfg: Config, prob: Problem, dtype: str) -> None:
    opt, hp = cfg
    params, grads = prob
    up = LocalOptimizer(opt, params=params, hyperparams={**hp, "maximize": True}, dtype=dtype)
    down = LocalOptimizer(opt, params=params, hyperparams=hp, dtype=dtype)
    for g in grads:
        up.step(g)
        down.step({n: -v for n, v in g.items()})
    assert_same(snapshot(up, opt, hp), snapshot(down, opt, hp))


@SETTINGS
@given(configs(weight_decay=False), problems(), st.sampled_from(["float32", "float64"]))
def test_zero_lr_changes_nothing(cfg: Config, prob: Problem, dtype: str) -> None:
    opt, hp = cfg
    params, grads = prob
    lo = LocalOptimizer(opt, params=params, hyperparams={**hp, "lr": 0.0}, dtype=dtype)
    before = lo.params
    for g in grads:
        lo.step(g)
    for n, p in lo.params.items():
        np.testing.assert_array_equal(p, before[n], err_msg=n)


@SETTINGS
@given(configs(), problems(steps=3), st.sets(st.sampled_from(NAMES), min_size=1, max_size=2))
def test_subset_step_touches_only_the_subset(cfg: Config, prob: Problem, subset: set[str]) -> None:
    opt, hp = cfg
    params, grads = prob
    lo = LocalOptimizer(opt, params=params, hyperparams=hp, dtype="float64")
    lo.step(grads[0])
    lo.step(grads[1])
    before = snapshot(lo, opt, hp)
    info = lo.step({n: grads[2][n] for n in subset})
    after = snapshot(lo, opt, hp)
    untouched = tuple(n for n in NAMES if n not in subset)
    assert_same(before, after, names=untouched)
    assert info.step == 3
    for n in subset:
        assert after["steps"][n] == 3


def expected_factor(spec: dict[str, Any], k: int) -> float:
    """DESIGN.md's schedules, evaluated at k = steps already taken (0 on the first step)."""
    name, t = spec["name"], k + 1
    if name == "constant":
        return 1.0
    if name == "step":
        return spec["gamma"] ** (k // spec["step_size"])
    if name == "exponential":
        return spec["gamma"] ** k
    if name == "linear_warmup":
        return min(1.0, t / spec["warmup_steps"])
    warmup = spec.get("warmup_steps", 0)
    if t <= warmup:
        return t / warmup
    if name == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / t)
    assert name == "cosine"
    lo, total = spec.get("min_lr_ratio", 0.0), spec["total_steps"]
    progress = min(1.0, (k - warmup) / (total - warmup))
    return lo + (1 - lo) * (1 + math.cos(math.pi * progress)) / 2


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(
        st.sampled_from(
            ["constant", "linear_warmup", "cosine", "inverse_sqrt", "step", "exponential"]
        )
    )
    gamma = draw(st.floats(0.05, 1.0))
    warmup = draw(st.integers(0, 8))
    if name == "step":
        return {"name": name, "step_size": draw(st.integers(1, 10)), "gamma": gamma}
    if name == "exponential":
        return {"name": name, "gamma": gamma}
    if name == "linear_warmup":
        return {"name": name, "warmup_steps": warmup + 1}
    if name == "inverse_sqrt":
        return {"name": name, "warmup_steps": warmup}
    if name == "cosine":
        total = warmup + draw(st.integers(1, 30))
        ratio = draw(st.floats(0.0, 1.0))
        return {"name": name, "warmup_steps": warmup, "total_steps": total, "min_lr_ratio": ratio}
    return {"name": name}


@SETTINGS
@given(schedules(), st.sampled_from([1e-3, 0.1, 1.0]))
def test_schedules_follow_the_formulas(spec: dict[str, Any], lr: float) -> None:
    lo = LocalOptimizer(
        "sgd", params={"x": np.zeros(2)}, hyperparams={"lr": lr}, schedule=spec, dtype="float64"
    )
    for k in range(40):
        before = lo.params["x"][0]
        info = lo.step({"x": np.ones(2)})
        want = lr * expected_factor(spec, k)
        assert math.isclose(info.lr, want, rel_tol=1e-12, abs_tol=1e-300), (k, info.lr, want)
        moved = before - lo.params["x"][0]  # SGD's update is -lr * g, g = 1: the lr was used
        assert math.isclose(moved, want, rel_tol=1e-9, abs_tol=1e-14 * (1 + abs(before))), k
