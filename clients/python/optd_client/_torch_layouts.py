"""What each `torch.optim` class keeps per parameter, and how its param groups map to
optd hyperparameters: the one place that knows torch's state layouts.

torch keeps a parameter's state under its index: `step` (a 0-d float tensor; SGD keeps
none), the slots shaped like the parameter, and per-parameter scalars as 0-d tensors
(NAdam's `mu_product`). Most classes create it on a parameter's first step; Adagrad
creates it for every parameter when it is constructed. A state dict of one class loads
into another without complaint in torch (it checks only the group sizes), so before
anything is converted, the group keys and state keys are checked against the class the
caller names (or the one class they fit): a NAdam state read as Adam would silently drop
`mu_product` and send `momentum_decay` to a server that refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import torch

TORCH_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}
# optd-only hyperparameters and the value under which torch behaves the same
OPTD_ONLY = {"bias_correction": True, "rho_threshold": 5.0}
# group keys about the implementation, not the numbers, and those LR schedulers add
TORCH_ONLY = frozenset(
    {"params", "param_names", "foreach", "capturable", "differentiable", "fused"}
    | {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}
)
# per-parameter scalar state and its initial value (optd keeps it in meta "scalars")
SCALARS: dict[str, dict[str, float]] = {"nadam": {"mu_product": 1.0}}
# torch creates these optimizers' state for every parameter at construction
EAGER = frozenset({"adagrad"})
# group keys that tell classes with otherwise overlapping keys apart
_REQUIRED = {
    "sgd": {"momentum", "dampening"},
    "adam": {"betas", "amsgrad"},
    "adamw": {"betas", "amsgrad"},
    "nadam": {"betas", "momentum_decay"},
    "radam": {"betas", "decoupled_weight_decay"},
    "adamax": {"betas"},
    "adagrad": {"lr_decay", "initial_accumulator_value"},
    "rmsprop": {"alpha", "centered"},
}
# every state key a class may hold (slots under any setting, step, scalars)
_STATE_KEYS = {
    "sgd": {"momentum_buffer"},
    "adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "adamw": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "nadam": {"step", "mu_product", "exp_avg", "exp_avg_sq"},
    "radam": {"step", "exp_avg", "exp_avg_sq"},
    "adamax": {"step", "exp_avg", "exp_inf"},
    "adagrad": {"step", "sum"},
    "rmsprop": {"step", "square_avg", "momentum_buffer", "grad_avg"},
}


def torch_class(optimizer: str) -> type[torch.optim.Optimizer]:
    cls = TORCH_CLASSES.get(optimizer)
    if cls is None:
        raise ValueError(
            f"optd optimizer {optimizer!r} has no torch.optim class, so its state has no "
            f"torch layout (those with one: {', '.join(TORCH_CLASSES)}); keep its checkpoints "
            "in optd: session.state()/load_state() or RemoteOptimizer.state_dict()/"
            "load_state_dict()"
        )
    return cls


def group_hps(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each optd group's hyperparameters: index 0 the session's, i + 1 `groups[i]`."""
    base = dict(config.get("hyperparams") or {})
    extra = [{k: v for k, v in g.items() if k != "match"} for g in config.get("groups") or []]
    return [base] + [{**base, **g} for g in extra]


def slots(optimizer: str, hp: Mapping[str, Any]) -> list[str]:
    """The slots torch keeps for a parameter of a group with these hyperparameters."""
    if optimizer == "sgd":
        return ["momentum_buffer"] if hp.get("momentum", 0.0) != 0 else []
    if optimizer in ("adam", "adamw"):
        return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if hp.get("amsgrad") else [])
    if optimizer == "adamax":
        return ["exp_avg", "exp_inf"]
    if optimizer == "adagrad":
        return ["sum"]
    if optimizer == "rmsprop":
        extra = [("momentum_buffer", hp.get("momentum", 0.0) > 0), ("grad_avg", hp.get("centered"))]
        return ["square_avg"] + [slot for slot, on in extra if on]
    return ["exp_avg", "exp_avg_sq"]  # nadam, radam


def slot_fill(optimizer: str, slot: str, hp: Mapping[str, Any]) -> float:
    """A slot's value before the first step (Adagrad starts its sum at a setting)."""
    if optimizer == "adagrad" and slot == "sum":
        return float(hp.get("initial_accumulator_value", 0.0))
    return 0.0


def _instance(optimizer: str, **kwargs: Any) -> torch.optim.Optimizer:
    """The class over a dummy parameter: torch fills in (and checks) the settings."""
    cls: Any = torch_class(optimizer)
    instance: torch.optim.Optimizer = cls([torch.zeros(1)], **kwargs)
    return instance


def optd_only(hp: Mapping[str, Any]) -> str | None:
    """The first setting in `hp` that torch.optim cannot express ("key=value"), or None."""
    for key, same in OPTD_ONLY.items():
        if hp.get(key, same) != same:
            return f"{key}={hp[key]!r}"
    return None


def torch_group(optimizer: str, hp: Mapping[str, Any]) -> dict[str, Any]:
    """A complete torch param group (defaults filled in by torch itself)."""
    setting = optd_only(hp)
    if setting is not None:
        raise ValueError(f"{setting} cannot be expressed in torch.optim")
    kwargs = {k: v for k, v in hp.items() if k not in OPTD_ONLY}
    if optimizer == "adamw":
        kwargs.pop("decoupled_weight_decay", None)  # implied by the class
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    group = dict(_instance(optimizer, **kwargs).param_groups[0])
    del group["params"]
    return group


def hyperparams(optimizer: str, group: Mapping[str, Any]) -> dict[str, Any]:
    """A torch param group's settings as optd hyperparameters (JSON-able). Keys no torch
    class has (a user's own labels in a group) are not settings: torch ignores them, and
    so does this."""
    known = _class_keys(optimizer) - TORCH_ONLY
    out: dict[str, Any] = {}
    for key, value in group.items():
        if key not in known:
            continue
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


@cache
def _class_keys(optimizer: str) -> frozenset[str]:
    return frozenset(_instance(optimizer).defaults) | frozenset(OPTD_ONLY)


@cache
def _any_class_keys() -> frozenset[str]:
    return frozenset().union(*(_class_keys(name) for name in TORCH_CLASSES))


def _misfit(optimizer: str, state_dict: Mapping[str, Any]) -> str | None:
    """Why `state_dict` is not a state of `optimizer`'s torch class, or None."""
    cls = torch_class(optimizer).__name__
    allowed = _class_keys(optimizer) | TORCH_ONLY
    for i, group in enumerate(state_dict["param_groups"]):
        unknown = sorted((set(group) & _any_class_keys()) - allowed)
        if unknown:
            return f"param group {i} has {unknown}, which torch.optim.{cls} has not"
        missing = sorted(_REQUIRED[optimizer] - set(group))
        if missing:
            return f"param group {i} lacks {missing}, which torch.optim.{cls} has"
        if optimizer == "adamw" and group.get("decoupled_weight_decay") is False:
            return "its weight decay is not decoupled (an Adam state), but AdamW's always is"
    for index, entry in state_dict["state"].items():
        unknown = sorted(set(entry) - _STATE_KEYS[optimizer])
        if unknown:
            return f"the state of parameter {index} has {unknown}, which {cls} does not keep"
    return None


def check_optimizer(state_dict: Mapping[str, Any], optimizer: str | None) -> str:
    """The optd optimizer whose torch class wrote `state_dict`: `optimizer` when the state
    fits it (else ValueError saying why), or the one class it fits when None."""
    if optimizer is not None:
        why = _misfit(optimizer, state_dict)
        if why is not None:
            raise ValueError(
                f"this state dict is not a torch.optim.{torch_class(optimizer).__name__} "
                f"state: {why}. Load it as the optimizer that wrote it"
            )
        return optimizer
    fits = [name for name in TORCH_CLASSES if _misfit(name, state_dict) is None]
    if fits == ["adam", "adamw"]:  # the same keys: AdamW is Adam with decoupled decay
        decoupled = all(g.get("decoupled_weight_decay") for g in state_dict["param_groups"])
        return "adamw" if decoupled else "adam"
    if len(fits) != 1:
        raise ValueError(
            f"cannot tell the optimizer from the state dict (it fits {fits or 'none'} of "
            f"{list(TORCH_CLASSES)}); pass optimizer="
        )
    return fits[0]
