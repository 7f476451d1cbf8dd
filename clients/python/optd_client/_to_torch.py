"""optd checkpoints -> `torch.optim` state dicts.

torch's `load_state_dict` pairs the saved parameters with the optimizer's by position,
group by group, and replaces each group's settings with the saved ones; it never looks
at names. So the state dict must list the groups and parameters exactly as the target
optimizer holds them: given the target itself, it follows that optimizer's groups (and
refuses a group that mixes session groups); given names, it lists the session's groups
in order and the caller builds the optimizer alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from optd_client._torch_layouts import (
    EAGER,
    SCALARS,
    TORCH_CLASSES,
    group_hps,
    optd_only,
    slots,
    torch_class,
    torch_group,
)
from optd_client.types import Checkpoint


def has_torch_layout(config: Mapping[str, Any]) -> bool:
    """Whether a session's state can become a torch state dict: a torch.optim class, and
    no group with a setting only optd has."""
    optimizer = str(config["optimizer"])
    return optimizer in TORCH_CLASSES and all(optd_only(hp) is None for hp in group_hps(config))


def _scalar_dtype() -> torch.dtype:
    # what torch.optim uses for `step` (torch.optim.optimizer._get_scalar_dtype)
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _names_plan(names: Sequence[str], group_of: Mapping[str, int]) -> list[tuple[int, list[str]]]:
    missing = [n for n in names if n not in group_of]
    if missing or len(set(names)) != len(group_of):
        raise ValueError(
            f"param_names must name each checkpoint parameter once (missing {missing[:5]})"
        )
    return [(g, [n for n in names if group_of[n] == g]) for g in sorted(set(group_of.values()))]


def _optimizer_plan(
    target: torch.optim.Optimizer,
    named_params: Iterable[tuple[str, torch.Tensor]] | None,
    group_of: Mapping[str, int],
    steps: Mapping[str, int],
) -> list[tuple[int, list[str]]]:
    """The target's groups as (session group, names), refusing what would load wrongly."""
    if named_params is not None:
        name_of = {id(p): str(n) for n, p in named_params}
        if any(id(p) not in name_of for g in target.param_groups for p in g["params"]):
            raise ValueError("the torch optimizer holds a parameter that named_params lacks")
        per_group = [[name_of[id(p)] for p in g["params"]] for g in target.param_groups]
    elif all("param_names" in g for g in target.param_groups):
        per_group = [[str(n) for n in g["param_names"]] for g in target.param_groups]
    else:
        raise ValueError(
            "the torch optimizer was not built from named parameters; pass named_params= "
            "(e.g. model.named_parameters()) to tell its parameters apart"
        )
    plan: list[tuple[int, list[str]]] = []
    for k, names in enumerate(per_group):
        unknown = [n for n in names if n not in group_of]
        if unknown:
            raise ValueError(f"torch param group {k} holds {unknown[:5]}, not in the checkpoint")
        session_groups = sorted({group_of[n] for n in names})
        if len(session_groups) > 1:
            raise ValueError(
                f"torch param group {k} mixes parameters of session groups {session_groups}; "
                "build its groups like the session's (group 0: what no pattern matches)"
            )
        plan.append((session_groups[0] if session_groups else 0, names))
    held = [n for _, names in plan for n in names]
    if len(set(held)) != len(held):
        raise ValueError("the torch optimizer holds a parameter twice")
    dropped = [n for n in group_of if n not in set(held) and steps[n] > 0]
    if dropped:
        raise ValueError(f"the session has stepped {dropped[:5]}, which the optimizer lacks")
    return plan


def to_torch_state_dict(
    checkpoint: Checkpoint,
    target: Sequence[str] | torch.optim.Optimizer,
    *,
    named_params: Iterable[tuple[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """The torch `state_dict()` of an optd checkpoint, to load into a torch optimizer.

    `target` is that optimizer (its groups are followed; its parameters are named by the
    `param_names` of an optimizer built from named parameters, or by `named_params`), or
    the parameter names in torch's order (e.g. `[n for n, _ in model.named_parameters()]`):
    then the groups are the session's in order (group 0: the parameters no pattern
    matches), each listing its parameters in that order, and the torch optimizer must be
    built the same way. Groups carry `param_names`. Scalar state (NAdam's `mu_product`)
    is a float64 tensor: torch casts it to the parameter's dtype when it loads it.
    """
    meta = checkpoint.meta
    optimizer = str(meta["config"]["optimizer"])
    torch_class(optimizer)
    hps = group_hps(meta["config"])
    position = {str(name): k for k, (name, _, _) in enumerate(meta["layout"])}
    group_of = {str(name): int(g) for name, _, g in meta["layout"]}
    steps = checkpoint.steps
    scalars = meta.get("scalars") or {}
    if isinstance(target, torch.optim.Optimizer):
        plan = _optimizer_plan(target, named_params, group_of, steps)
    else:
        plan = _names_plan([str(n) for n in target], group_of)
    state: dict[int, dict[str, torch.Tensor]] = {}
    groups: list[dict[str, Any]] = []
    index = 0
    for g, names in plan:
        ids = list(range(index, index + len(names)))
        index += len(names)
        for i, name in zip(ids, names, strict=True):
            if steps[name] == 0 and optimizer not in EAGER:
                continue  # torch creates a parameter's state on its first step
            entry: dict[str, torch.Tensor] = {}
            if optimizer != "sgd":  # torch keeps no step count for SGD
                entry["step"] = torch.tensor(float(steps[name]), dtype=_scalar_dtype())
            for key in SCALARS.get(optimizer, {}):
                value = float(scalars[key][position[name]])
                entry[key] = torch.tensor(value, dtype=torch.float64)
            for slot in slots(optimizer, hps[g]):
                entry[slot] = torch.from_numpy(np.array(checkpoint.tensors[f"{slot}/{name}"]))
            if entry:
                state[i] = entry
        groups.append({**torch_group(optimizer, hps[g]), "params": ids, "param_names": names})
    return {"state": state, "param_groups": groups}
