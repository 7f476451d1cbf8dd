"""Shared by the torch adapter's tests: every torch-equivalent optimizer with settings
that make each of its slots appear, a small model with frozen parameters, and the loops
that train it in torch and on the server alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Named = list[tuple[str, torch.nn.Parameter]]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# torch class, settings that make every slot appear, the second group's overrides
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, {"lr": 0.02, "weight_decay": 0.1}),
    "adam": (torch.optim.Adam, {"lr": 0.01, "amsgrad": True}, {"lr": 0.03, "weight_decay": 0.1}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "amsgrad": True}, {"weight_decay": 0.0}),
    "nadam": (torch.optim.NAdam, {"lr": 0.01}, {"lr": 0.03, "weight_decay": 0.1}),
    "radam": (torch.optim.RAdam, {"lr": 0.01}, {"lr": 0.03, "weight_decay": 0.1}),
    "adamax": (torch.optim.Adamax, {"lr": 0.01}, {"lr": 0.03, "weight_decay": 0.1}),
    "adagrad": (
        torch.optim.Adagrad,
        {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
        {"lr": 0.1, "initial_accumulator_value": 0.2},
    ),
    "rmsprop": (
        torch.optim.RMSprop,
        {"lr": 0.01, "momentum": 0.5, "centered": True},
        {"lr": 0.03, "momentum": 0.0},
    ),
}
# a, c and b, d have equal shapes (swapped state would go unnoticed), "e" is frozen but
# in a group, "f" is frozen and in none
SHAPES = {"a": (3, 2), "b": (3,), "c": (3, 2), "d": (3,), "e": (2,), "f": (4,)}
TRAINED = ("a", "b", "c", "d")


def model(dtype: torch.dtype) -> Named:
    """Parameters in model order (what `model.named_parameters()` gives)."""
    g = torch.Generator().manual_seed(7)
    out = [
        (n, torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype))) for n, s in SHAPES.items()
    ]
    for name, p in out:
        p.requires_grad_(name in TRAINED)
    return out


def shuffled_groups(params: Named, over: dict[str, Any]) -> list[dict[str, Any]]:
    """Two named groups that list the parameters out of model order, as decay / no-decay
    splits do; "f" is in neither."""
    p = dict(params)
    return [
        {"params": [("c", p["c"]), ("a", p["a"])]},
        {"params": [("d", p["d"]), ("e", p["e"]), ("b", p["b"])], **over},
    ]


def grads(n: int, params: Named) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(8)
    return [  # "d" skips every other step: per-parameter step counts differ
        {name: rng.standard_normal(p.shape) for name, p in params if name in TRAINED[: 3 + k % 2]}
        for k in range(n)
    ]


def torch_steps(opt: torch.optim.Optimizer, params: Named, gs: list[dict[str, np.ndarray]]) -> None:
    for g in gs:
        for name, p in params:
            p.grad = torch.from_numpy(g[name]).to(p.dtype) if name in g else None
        opt.step()


def values(params: Named) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in params}


def assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], dtype: torch.dtype) -> None:
    assert a.keys() == b.keys()
    for n in a:
        np.testing.assert_allclose(a[n], b[n], rtol=TOL[dtype], atol=TOL[dtype], err_msg=n)
