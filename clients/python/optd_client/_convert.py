"""optd checkpoints <-> `torch.optim` state dicts, without losing a bit.

torch keeps per-parameter state under the parameter's index in `param_groups` and
creates it lazily (`_torch_layouts` knows each class's layout); optd keeps one array per
slot, a step count per parameter and per-parameter scalars (NAdam's `mu_product`) in the
meta document. optd parameter groups (glob patterns) become torch param_groups and back
(as exact-name patterns). Which parameter a torch index stands for is decided by
`_torch_match`, never by assuming model order. Learning-rate schedules are not
converted: torch keeps those in a separate LRScheduler.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import torch

from optd_client._to_torch import has_torch_layout, to_torch_state_dict
from optd_client._torch_layouts import (
    SCALARS,
    check_optimizer,
    group_hps,
    hyperparams,
    slot_fill,
    slots,
)
from optd_client._torch_match import Member, match, session_dtype
from optd_client.types import PARAM_SLOT, Checkpoint

__all__ = ["from_torch_state_dict", "has_torch_layout", "to_torch_state_dict"]

_OPTION_KEYS = frozenset({"mode", "workers", "max_staleness", "staleness_lr", "labels", "ttl_s"})
_CONFIG_KEYS = frozenset({"schedule", "max_grad_norm", "check_finite"})


def _escape(name: str) -> str:
    """An fnmatch pattern that matches exactly `name`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _new_config(
    optimizer: str, hps: list[dict[str, Any]], members: list[Member], dtype: str
) -> tuple[dict[str, Any], dict[int, int]]:
    """A session config from torch groups, and the optd group of each torch group (group 0
    is the session's hyperparameters; a later torch group without parameters has none)."""
    base = hps[0]
    groups: list[dict[str, Any]] = []
    optd_group = {0: 0}
    for k, hp in enumerate(hps[1:], start=1):
        names = [m.name for m in members if m.group == k]
        if names:
            diff = {key: v for key, v in hp.items() if base.get(key) != v}
            groups.append({"match": [_escape(n) for n in names]} | diff)
            optd_group[k] = len(groups)
    config = {
        "optimizer": optimizer, "hyperparams": base, "dtype": dtype, "schedule": None,
        "max_grad_norm": None, "check_finite": True, "groups": groups,
    }  # fmt: skip
    return config, optd_group


def _pattern_group(config: Mapping[str, Any], name: str) -> int:
    """The session's rule: the first group with a matching pattern, else group 0."""
    for i, group in enumerate(config.get("groups") or []):
        if any(fnmatchcase(name, pattern) for pattern in group["match"]):
            return i + 1
    return 0


def from_torch_state_dict(
    state_dict: Mapping[str, Any] | torch.optim.Optimizer,
    named_params: Iterable[tuple[str, torch.Tensor]],
    optimizer: str | None = None,
    *,
    dtype: str | None = None,
    template: Mapping[str, Any] | None = None,
    include_unlisted: bool = False,
    **session_options: Any,
) -> Checkpoint:
    """An optd checkpoint (load it with `session.load_state()`) from a torch optimizer, or
    its `state_dict()`, and the named parameters it was built over.

    Parameters are matched by identity when the optimizer itself is passed, by the
    `param_names` of each group when the optimizer was built from named parameters, and
    by position only for a single group without names (then `named_params` must be exactly
    the optimizer's parameters in its order); anything else is refused with ValueError.
    Extra `named_params` (frozen ones the optimizer does not hold) are left out, or with
    `include_unlisted` put in, never stepped, in the group their name falls into.

    `optimizer` (e.g. "nadam") is checked against the state dict's keys, or inferred from
    them. `dtype` defaults to float64 when every parameter is float64 and to float32 when
    none is; a mix needs an explicit `dtype`. `template`, an optd meta document, supplies
    config and options; otherwise they come from the param_groups plus `session_options`
    (`labels`, `max_grad_norm`, `schedule`, ...).
    """
    matched = match(state_dict, named_params)
    sd, members = matched.state_dict, matched.members
    if template is not None:
        wrote = str(template["config"]["optimizer"])
        if optimizer is not None and optimizer != wrote:
            raise ValueError(f"the template is a {wrote!r} session, not {optimizer!r}")
        optimizer = wrote
        dtype = dtype or template["config"].get("dtype")
    optimizer = check_optimizer(sd, optimizer)
    extra = matched.unlisted if include_unlisted else []
    dtype = session_dtype([(m.name, m.param) for m in members] + extra, dtype)
    np_dtype = np.dtype(dtype)
    t_steps: dict[str, int] = {}
    t_group: dict[str, int] = {}
    if template is not None:
        config = dict(template["config"])
        for (name, _, g), step in zip(template["layout"], template["steps"], strict=True):
            t_steps[name], t_group[name] = int(step), int(g)
        optd_group: dict[int, int] = {}
    else:
        hps = [hyperparams(optimizer, g) for g in sd["param_groups"]]
        config, optd_group = _new_config(optimizer, hps, members, dtype)
        config |= {k: v for k, v in session_options.items() if k in _CONFIG_KEYS}
    config["dtype"] = dtype
    hps_of = group_hps(config)
    all_slots = list(dict.fromkeys(s for hp in hps_of for s in slots(optimizer, hp)))
    scalar_init = SCALARS.get(optimizer, {})
    rows: list[tuple[int, str, torch.Tensor, int, dict[str, float]]] = []
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    held = [(m.name, m.param, sd["state"].get(m.index, {}), m.group) for m in members]
    for name, param, entry, torch_g in held + [(n, p, {}, -1) for n, p in extra]:
        if name in t_group:
            g = t_group[name]
        elif torch_g in optd_group:
            g = optd_group[torch_g]
        else:
            g = _pattern_group(config, name)
        value = param.detach().cpu().numpy().astype(np_dtype)
        tensors[f"{PARAM_SLOT}/{name}"] = value
        if optimizer == "sgd":  # torch keeps no step count for SGD
            step = t_steps.get(name, 1 if "momentum_buffer" in entry else 0)
        else:
            step = int(entry["step"]) if "step" in entry else 0
        scalars = {k: float(entry[k]) if k in entry else v for k, v in scalar_init.items()}
        rows.append((g, name, param, step, scalars))
        for slot in all_slots:
            arr = entry.get(slot)
            tensors[f"{slot}/{name}"] = (
                np.full_like(value, slot_fill(optimizer, slot, hps_of[g]))
                if arr is None
                else arr.detach().cpu().numpy().astype(np_dtype)
            )
    rows.sort(key=lambda row: row[0])  # a group is one contiguous range (stable)
    now = time.time()
    meta = {
        "format": 1,
        "config": config,
        "options": dict(template["options"]) if template else {
            "mode": "async", "workers": None, "max_staleness": None, "staleness_lr": "none",
            "labels": {}, "ttl_s": None,
        } | {k: v for k, v in session_options.items() if k in _OPTION_KEYS},
        "layout": [[name, list(param.shape), g] for g, name, param, _, _ in rows],
        "steps": [step for _, _, _, step, _ in rows],
        "scalars": {k: [row[4][k] for row in rows] for k in scalar_init},
        "step": int(template["step"]) if template else max(
            (row[3] for row in rows), default=0
        ),
        "last_loss": template.get("last_loss") if template else None,
        "created_at": template.get("created_at", now) if template else now,
        "updated_at": now,
    }  # fmt: skip
    return Checkpoint(tensors=tensors, meta=meta)
