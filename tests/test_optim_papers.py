"""Optimizers without a torch reference, checked against their papers' formulas written out
here in plain numpy (one loop over steps, no shared code with app/optim), plus validation and
the registry listing.

AdaBelief: Zhuang et al. 2020, Algorithm 2 as in the official code with rectify off (eps added
to s every step and again outside the sqrt). Lion: Chen et al. 2023, Algorithm 2. Adam without
bias correction: Kingma & Ba, section 6.4. RAdam with rho_threshold=4: the seeds' variant.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from app.optim import get_optimizer, list_optimizers
from app.optim.local import LocalOptimizer
from app.problems import InvalidConfig

ALL = (
    "sgd",
    "adam",
    "adamw",
    "nadam",
    "radam",
    "adamax",
    "adagrad",
    "rmsprop",
    "adabelief",
    "lion",
)
WITH_BETAS = ("adam", "adamw", "nadam", "radam", "adamax", "adabelief", "lion")
SHAPES = {"w": (3, 4), "s": ()}
STEPS = 30


def problem() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(7)
    params = {n: rng.standard_normal(shape) for n, shape in SHAPES.items()}
    grads = [{n: rng.standard_normal(shape) for n, shape in SHAPES.items()} for _ in range(STEPS)]
    return params, grads


def run_local(opt: str, hp: dict[str, Any]) -> list[np.ndarray]:
    """optd's trajectory: the concatenated params after each step."""
    params, grads = problem()
    lo = LocalOptimizer(opt, params=params, hyperparams=hp, dtype="float64")
    out = []
    for g in grads:
        lo.step(g)
        out.append(np.concatenate([lo.params[n].ravel() for n in SHAPES]))
    return out


def flat_problem() -> tuple[np.ndarray, list[np.ndarray]]:
    params, grads = problem()
    p = np.concatenate([params[n].ravel() for n in SHAPES])
    return p, [np.concatenate([g[n].ravel() for n in SHAPES]) for g in grads]


def adabelief_paper(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-16,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    decoupled_weight_decay: bool = True,
    maximize: bool = False,
    bias_correction: bool = True,
) -> list[np.ndarray]:
    b1, b2 = betas
    p, grads = flat_problem()
    m, s, s_max = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        if amsgrad:
            s_max = np.maximum(s_max, s)
        bc1, bc2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)
        s_hat = (s_max if amsgrad else s) / bc2
        p = p - lr * (m / bc1) / (np.sqrt(s_hat) + eps)
        out.append(p)
    return out


def lion_paper(
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> list[np.ndarray]:
    b1, b2 = betas
    p, grads = flat_problem()
    m = np.zeros_like(p)
    out = []
    for g in grads:
        g = -g if maximize else g
        c = b1 * m + (1 - b1) * g
        p = p - lr * (np.sign(c) + weight_decay * p)
        m = b2 * m + (1 - b2) * g
        out.append(p)
    return out


def adam_no_bias_correction(
    lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> list[np.ndarray]:
    b1, b2 = betas
    p, grads = flat_problem()
    m, v = np.zeros_like(p), np.zeros_like(p)
    out = []
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * m / (np.sqrt(v) + eps)
        out.append(p)
    return out


def radam_threshold(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    threshold: float = 4.0,
) -> list[np.ndarray]:
    b1, b2 = betas
    p, grads = flat_problem()
    m, v = np.zeros_like(p), np.zeros_like(p)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > threshold:
            r = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            p = p - lr * m_hat * r * math.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
        else:
            p = p - lr * m_hat
        out.append(p)
    return out


def assert_trajectory(ours: list[np.ndarray], ref: list[np.ndarray]) -> None:
    for t, (a, b) in enumerate(zip(ours, ref, strict=True), start=1):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=f"step {t}")


ADABELIEF = {
    "default": {},
    "lr_betas": {"lr": 0.01, "betas": [0.8, 0.99]},
    "eps": {"lr": 0.01, "eps": 1e-4},
    "weight_decay_decoupled": {"lr": 0.01, "weight_decay": 0.1},
    "weight_decay_l2": {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": False},
    "amsgrad": {"lr": 0.01, "amsgrad": True},
    "amsgrad_wd_maximize": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05, "maximize": True},
    "maximize": {"lr": 0.01, "maximize": True},
    "no_bias_correction": {"lr": 0.01, "bias_correction": False},
}
LION = {
    "default": {},
    "lr_betas": {"lr": 3e-3, "betas": [0.95, 0.98]},
    "weight_decay": {"lr": 3e-3, "weight_decay": 0.5},
    "maximize": {"lr": 3e-3, "maximize": True, "weight_decay": 0.1},
}


@pytest.mark.parametrize("hp", ADABELIEF.values(), ids=ADABELIEF.keys())
def test_adabelief_matches_paper(hp: dict[str, Any]) -> None:
    ref = adabelief_paper(**{k: tuple(v) if k == "betas" else v for k, v in hp.items()})
    assert_trajectory(run_local("adabelief", hp), ref)


@pytest.mark.parametrize("hp", LION.values(), ids=LION.keys())
def test_lion_matches_paper(hp: dict[str, Any]) -> None:
    ref = lion_paper(**{k: tuple(v) if k == "betas" else v for k, v in hp.items()})
    assert_trajectory(run_local("lion", hp), ref)


def test_lion_moves_every_element_by_exactly_lr() -> None:
    lr = 1e-3
    p0, _ = flat_problem()
    traj = [p0, *run_local("lion", {"lr": lr})]
    for before, after in zip(traj, traj[1:], strict=False):
        np.testing.assert_allclose(np.abs(after - before), lr, rtol=1e-12)


def constant_gradient_steps(opt: str, n: int = 50) -> np.ndarray:
    lo = LocalOptimizer(opt, params={"x": np.zeros(3)}, hyperparams={"lr": 1e-3}, dtype="float64")
    g = np.array([2.0, -0.5, 1e-3])
    out = []
    for _ in range(n):
        before = lo.params["x"]
        lo.step({"x": g})
        out.append(lo.params["x"] - before)
    return np.array(out)


def test_constant_gradient_step_sizes() -> None:
    """Adam's step for a constant gradient is exactly lr. AdaBelief's starts at lr / beta1
    (s_1 = (1 - b2) * (b1 * g)^2) and then grows, since the observed gradient matches its
    belief: its variance estimate shrinks while Adam's does not. Both move against g."""
    adam, belief = constant_gradient_steps("adam"), constant_gradient_steps("adabelief")
    sign = -np.sign([2.0, -0.5, 1e-3])
    assert np.all(np.sign(adam) == sign) and np.all(np.sign(belief) == sign)
    np.testing.assert_allclose(np.abs(adam), 1e-3, rtol=1e-4)
    np.testing.assert_allclose(np.abs(belief[0]), 1e-3 / 0.9, rtol=1e-6)
    assert np.all(np.diff(np.abs(belief), axis=0) > 0)
    np.testing.assert_allclose(np.abs(belief[4]), 1.3422e-3, rtol=1e-3)  # t = 5


def test_adam_without_bias_correction_is_the_ablation() -> None:
    ours = run_local("adam", {"lr": 0.01, "bias_correction": False})
    assert_trajectory(ours, adam_no_bias_correction(lr=0.01))
    corrected = run_local("adam", {"lr": 0.01})
    assert not np.allclose(ours[0], corrected[0])


def test_radam_threshold_4_is_the_seeds_variant() -> None:
    ours = run_local("radam", {"lr": 0.01, "rho_threshold": 4})
    assert_trajectory(ours, radam_threshold(lr=0.01, threshold=4.0))
    torch_like = run_local("radam", {"lr": 0.01})
    assert_trajectory(torch_like, radam_threshold(lr=0.01, threshold=5.0))
    # rho_4 = 3.997 and rho_5 = 4.996: the variants agree for four steps, then part.
    np.testing.assert_array_equal(ours[3], torch_like[3])
    assert not np.allclose(ours[4], torch_like[4], rtol=1e-6)


def assert_invalid(opt: str, hp: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        get_optimizer(opt).validate(hp)
    assert field in exc.value.detail
    errors = exc.value.extra["errors"]
    assert errors and any(field in e["loc"] for e in errors), errors


@pytest.mark.parametrize("opt", ALL)
def test_validation_names_the_field(opt: str) -> None:
    assert_invalid(opt, {"lr": -1}, "lr")
    assert_invalid(opt, {"lr": "fast"}, "lr")
    assert_invalid(opt, {"lr": float("nan")}, "lr")
    assert_invalid(opt, {"learning_rate": 0.1}, "learning_rate")
    assert_invalid(opt, {"maximize": "sometimes"}, "maximize")
    if opt in WITH_BETAS:
        for bad in ([1.0, 0.999], [0.9, 1.0], [-0.1, 0.999], [0.9], 0.9, ["a", "b"]):
            assert_invalid(opt, {"betas": bad}, "betas")
    get_optimizer(opt).validate({"lr": 0.5})  # and a good one passes


def test_invalid_config_through_local_optimizer() -> None:
    params = {"w": np.zeros(2), "b": np.zeros(2)}
    with pytest.raises(InvalidConfig, match="lr"):
        LocalOptimizer("adam", params=params, hyperparams={"lr": -1.0})
    with pytest.raises(InvalidConfig, match="weight_decay") as exc:
        LocalOptimizer("adam", params=params, groups=[{"match": ["b"], "weight_decay": -1}])
    assert "groups" in exc.value.detail
    with pytest.raises(InvalidConfig, match="schedule"):
        LocalOptimizer("adam", params=params, schedule={"name": "sawtooth"})
    with pytest.raises(InvalidConfig, match="optimizer"):
        get_optimizer("adamz")


def test_list_optimizers() -> None:
    listed = list_optimizers()
    assert sorted(o["name"] for o in listed) == sorted(ALL)
    json.dumps(listed)  # the GET /v1/optimizers body as is
    for o in listed:
        schema = o["hyperparams_schema"]
        assert schema["type"] == "object"
        assert set(schema["properties"]) == set(o["defaults"]), o["name"]
        assert o["defaults"]["maximize"] is False
        again = get_optimizer(o["name"]).validate(o["defaults"])
        assert again.model_dump(mode="json") == o["defaults"]


def test_paper_defaults() -> None:
    defaults = {o["name"]: o["defaults"] for o in list_optimizers()}
    assert defaults["adabelief"] == {
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-16,
        "weight_decay": 0.0,
        "amsgrad": False,
        "decoupled_weight_decay": True,
        "bias_correction": True,
        "maximize": False,
    }
    assert defaults["lion"] == {
        "lr": 1e-4,
        "betas": [0.9, 0.99],
        "weight_decay": 0.0,
        "maximize": False,
    }
