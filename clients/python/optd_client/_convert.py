"""optd checkpoints <-> torch `Adam`/`AdamW`/`SGD` state dicts, without losing a bit.

torch keeps per-parameter state under the parameter's index in `param_groups`
(`step` as a 0-d float tensor, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`,
`momentum_buffer`) and creates it lazily on a parameter's first step; optd keeps one
array per slot and a step count per parameter. optd parameter groups (glob patterns)
become torch param_groups and back (as exact-name patterns). Learning-rate schedules
are not converted: torch keeps those in a separate LRScheduler.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from optd_client.types import PARAM_SLOT, Checkpoint

TORCH_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
# optd-only hyperparameters and the value under which torch behaves the same
_OPTD_ONLY = {"bias_correction": True}
# torch group keys that are about the implementation, not the numbers
_TORCH_ONLY = frozenset(
    {"params", "param_names", "foreach", "capturable", "differentiable", "fused", "initial_lr"}
)
_OPTION_KEYS = frozenset({"mode", "workers", "max_staleness", "staleness_lr", "labels", "ttl_s"})
_CONFIG_KEYS = frozenset({"schedule", "max_grad_norm", "check_finite"})


def _supported(optimizer: str) -> type[torch.optim.Optimizer]:
    cls = TORCH_CLASSES.get(optimizer)
    if cls is None:
        raise ValueError(
            f"optimizer {optimizer!r} has no torch state_dict mapping; use adam, adamw or sgd"
        )
    return cls


def _slots(optimizer: str, hp: Mapping[str, Any]) -> list[str]:
    if optimizer == "sgd":
        return ["momentum_buffer"] if hp.get("momentum", 0.0) != 0 else []
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if hp.get("amsgrad") else [])


def _group_hps(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    base = dict(config.get("hyperparams") or {})
    extra = [{k: v for k, v in g.items() if k != "match"} for g in config.get("groups") or []]
    return [base] + [{**base, **g} for g in extra]


def _torch_group(optimizer: str, hp: Mapping[str, Any]) -> dict[str, Any]:
    """A complete torch param group (defaults filled in by torch itself)."""
    kwargs = dict(hp)
    for key, same in _OPTD_ONLY.items():
        if kwargs.pop(key, same) != same:
            raise ValueError(f"{key}={hp[key]!r} cannot be expressed in torch.optim")
    if optimizer == "adamw":
        kwargs.pop("decoupled_weight_decay", None)  # implied by the class
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    group = dict(_supported(optimizer)([torch.zeros(1)], **kwargs).param_groups[0])
    del group["params"]
    return group


def _scalar_dtype() -> torch.dtype:
    # what torch.optim uses for `step` (torch.optim.optimizer._get_scalar_dtype)
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def to_torch_state_dict(checkpoint: Checkpoint, param_names: Sequence[str]) -> dict[str, Any]:
    """The torch `state_dict()` of an optd checkpoint for an optimizer built over
    `param_names` (torch's parameter order, e.g. `[n for n, _ in model.named_parameters()]`)."""
    meta = checkpoint.meta
    optimizer = str(meta["config"]["optimizer"])
    _supported(optimizer)
    hps = _group_hps(meta["config"])
    group_of = {str(name): int(g) for name, _, g in meta["layout"]}
    steps = checkpoint.steps
    missing = [n for n in param_names if n not in group_of]
    if missing or len(set(param_names)) != len(group_of):
        raise ValueError(
            f"param_names must name each checkpoint parameter once (missing {missing[:5]})"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    groups: list[dict[str, Any]] = []
    index = 0
    for g in sorted(set(group_of.values())):
        names = [n for n in param_names if group_of[n] == g]
        ids = list(range(index, index + len(names)))
        index += len(names)
        for i, name in zip(ids, names, strict=True):
            if steps[name] == 0:
                continue  # torch creates a parameter's state on its first step
            entry = {
                slot: torch.from_numpy(np.array(checkpoint.tensors[f"{slot}/{name}"]))
                for slot in _slots(optimizer, hps[g])
            }
            if optimizer != "sgd":
                entry = {"step": torch.tensor(float(steps[name]), dtype=_scalar_dtype()), **entry}
            if entry:
                state[i] = entry
        groups.append({**_torch_group(optimizer, hps[g]), "params": ids, "param_names": names})
    return {"state": state, "param_groups": groups}


def _infer_optimizer(group: Mapping[str, Any]) -> str:
    if "betas" in group:
        return "adamw" if group.get("decoupled_weight_decay") else "adam"
    if "momentum" in group and "dampening" in group:
        return "sgd"
    raise ValueError("cannot tell the optimizer from the state dict; pass optimizer=")


def _hyperparams(group: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in group.items():
        if key in _TORCH_ONLY:
            continue
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _escape(name: str) -> str:
    """An fnmatch pattern that matches exactly `name`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    named_params: Iterable[tuple[str, torch.Tensor]],
    optimizer: str | None = None,
    *,
    dtype: str | None = None,
    template: Mapping[str, Any] | None = None,
    **session_options: Any,
) -> Checkpoint:
    """An optd checkpoint (load it with `session.load_state()`) from a torch optimizer's
    `state_dict()` and the parameters it was built over, in the same order.

    `dtype` defaults to float64 for float64 parameters, else float32. `template`, an
    optd meta document, supplies config and options; otherwise they come from the
    param_groups, plus `session_options` (`labels`, `max_grad_norm`, `schedule`, ...).
    """
    named = [(str(n), p) for n, p in named_params]
    groups = list(state_dict["param_groups"])
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(named):
        raise ValueError(f"the state dict has {len(ids)} parameters, named_params {len(named)}")
    if template is not None:
        optimizer = str(template["config"]["optimizer"])
    optimizer = optimizer or _infer_optimizer(groups[0])
    _supported(optimizer)
    if dtype is None:
        dtype = template["config"].get("dtype") if template else None
        dtype = dtype or ("float64" if named[0][1].dtype == torch.float64 else "float32")
    np_dtype = np.dtype(dtype)
    hps = [_hyperparams(g) for g in groups]
    position = {i: k for k, i in enumerate(ids)}
    t_steps: dict[str, int] = {}
    t_group: dict[str, int] = {}
    if template is not None:
        config = dict(template["config"])
        for (name, _, g), step in zip(template["layout"], template["steps"], strict=True):
            t_steps[name], t_group[name] = int(step), int(g)
    else:
        base = hps[0]
        config = {
            "optimizer": optimizer, "hyperparams": base, "dtype": dtype, "schedule": None,
            "max_grad_norm": None, "check_finite": True,
            "groups": [
                {"match": [_escape(named[position[i]][0]) for i in g["params"]]}
                | {k: v for k, v in hp.items() if base.get(k) != v}
                for g, hp in zip(groups[1:], hps[1:], strict=True)
            ],
        }  # fmt: skip
        config |= {k: v for k, v in session_options.items() if k in _CONFIG_KEYS}
    config["dtype"] = dtype
    slots = list(dict.fromkeys(s for hp in _group_hps(config) for s in _slots(optimizer, hp)))
    layout: list[list[Any]] = []
    steps: list[int] = []
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    per_slot: dict[str, dict[str, np.ndarray[Any, Any]]] = {s: {} for s in slots}
    for g, group in enumerate(groups):
        for i in group["params"]:
            name, param = named[position[i]]
            entry = state_dict["state"].get(i, {})
            value = param.detach().cpu().numpy().astype(np_dtype)
            tensors[f"{PARAM_SLOT}/{name}"] = value
            layout.append([name, list(param.shape), t_group.get(name, g)])
            if optimizer == "sgd":  # torch keeps no step count for SGD
                steps.append(t_steps.get(name, 1 if "momentum_buffer" in entry else 0))
            else:
                steps.append(int(entry["step"]) if "step" in entry else 0)
            for slot in slots:
                arr = entry.get(slot)
                per_slot[slot][name] = (
                    np.zeros_like(value)
                    if arr is None
                    else arr.detach().cpu().numpy().astype(np_dtype)
                )
    for slot in slots:
        tensors |= {f"{slot}/{n}": a for n, a in per_slot[slot].items()}
    now = time.time()
    meta = {
        "format": 1,
        "config": config,
        "options": dict(template["options"]) if template else {
            "mode": "async", "workers": None, "max_staleness": None, "staleness_lr": "none",
            "labels": {}, "ttl_s": None,
        } | {k: v for k, v in session_options.items() if k in _OPTION_KEYS},
        "layout": layout,
        "steps": steps,
        "scalars": {},
        "step": int(template["step"]) if template else max(steps, default=0),
        "last_loss": template.get("last_loss") if template else None,
        "created_at": template.get("created_at", now) if template else now,
        "updated_at": now,
    }  # fmt: skip
    return Checkpoint(tensors=tensors, meta=meta)
