"""Which named parameter each entry of a torch optimizer's state belongs to, and which
parameters an optd session can hold at all.

torch numbers parameters group after group, in the order the optimizer was given them,
and its own `load_state_dict` maps them back by position: it assumes an optimizer built
the same way. A flat `model.named_parameters()` carries no groups, so numbering it from
0 goes wrong as soon as the groups do not list the parameters in model order (the usual
decay / no-decay split): the moments land on other parameters, silently when the shapes
agree. So a parameter is matched by what proves it: the tensor itself when the optimizer
is at hand, the `param_names` torch stores in each group when the optimizer was built
from named parameters, and its position only when there is one group (then the order is
the one the optimizer was given, which is what torch itself assumes). Anything else is
refused with what to do instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from optd_client._torch_layouts import SCALARS

_SCALAR_KEYS = frozenset({"step"}.union(*SCALARS.values()))
_HOW = (
    "pass the torch optimizer itself instead of its state_dict() (parameters are then "
    "matched by identity; a saved state dict can first be loaded into an optimizer built "
    "with the same groups), or build the optimizer from named parameters, e.g. "
    "torch.optim.AdamW([{'params': [(name, p), ...], ...}, ...]), so that its state dict "
    "carries param_names"
)


@dataclass(frozen=True)
class Member:
    """A parameter the torch optimizer holds."""

    name: str
    param: torch.Tensor
    index: Any  # its key in state_dict["state"]
    group: int  # its torch param group


@dataclass(frozen=True)
class Matched:
    state_dict: Mapping[str, Any]
    members: list[Member]  # in the state dict's order: group by group
    unlisted: list[tuple[str, torch.Tensor]]  # named parameters the optimizer does not hold


def check_real(named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """optd keeps real floating-point state; torch steps a complex parameter as its
    `view_as_real`, which a session cannot reproduce from the parameter's name alone, so a
    complex one is refused rather than sent without its imaginary part."""
    for name, p in named:
        if p.is_complex():
            raise TypeError(
                f"parameter {name!r} is {p.dtype}: optd holds real parameters only; keep "
                "complex ones out of it (e.g. in a local torch optimizer)"
            )
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} is {p.dtype}, not a floating-point tensor")


def session_dtype(named: Sequence[tuple[str, torch.Tensor]], dtype: str | None) -> str:
    """The session dtype for these parameters: `dtype` when given, else float64 when all
    are float64 and float32 when none is. A mix is refused: a float32 session would round
    the float64 parameters, and a float64 one would not update the others in their own
    precision as torch does, so only the caller can say which matters."""
    check_real(named)
    if dtype is not None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        return dtype
    doubles = [n for n, p in named if p.dtype == torch.float64]
    others = [(n, p.dtype) for n, p in named if p.dtype != torch.float64]
    if doubles and others:
        raise ValueError(
            f"the parameters mix torch.float64 ({doubles[0]!r}) with {others[0][1]} "
            f"({others[0][0]!r}): a float32 session would round the float64 ones and a "
            "float64 session would not update the others in their own precision as torch "
            "does; pass dtype='float64' or dtype='float32' to choose"
        )
    return "float64" if doubles else "float32"


def match(
    source: Mapping[str, Any] | torch.optim.Optimizer,
    named_params: Iterable[tuple[str, torch.Tensor]],
) -> Matched:
    """Pair every parameter of a torch optimizer (or its state dict) with its name."""
    named = [(str(n), p) for n, p in named_params]
    by_name: dict[str, torch.Tensor] = {}
    for n, p in named:
        if n in by_name:
            raise ValueError(f"named_params lists {n!r} twice")
        by_name[n] = p
    if isinstance(source, torch.optim.Optimizer):
        state_dict: Mapping[str, Any] = source.state_dict()
        sizes = [len(g["params"]) for g in source.param_groups]
        if sizes == [len(g["params"]) for g in state_dict["param_groups"]]:
            names = _by_identity(source, named)
        else:  # a state dict shaped unlike its optimizer's groups (a RemoteOptimizer's)
            names = _by_name_or_position(state_dict, named)
    else:
        state_dict = source
        names = _by_name_or_position(state_dict, named)
    members: list[Member] = []
    for g, (group, group_names) in enumerate(zip(state_dict["param_groups"], names, strict=True)):
        if len(group_names) != len(group["params"]):
            raise ValueError(
                f"param group {g} lists {len(group['params'])} parameters but "
                f"{len(group_names)} param_names"
            )
        for index, name in zip(group["params"], group_names, strict=True):
            if name not in by_name:
                raise ValueError(
                    f"the state dict names parameter {name!r}, which named_params lacks "
                    f"(it has {list(by_name)[:5]}...)"
                )
            members.append(Member(name, by_name[name], index, g))
    listed = [m.name for m in members]
    if len(set(listed)) != len(listed):
        twice = sorted({n for n in listed if listed.count(n) > 1})
        raise ValueError(f"the optimizer holds {twice} more than once")
    for m in members:
        _check_shapes(state_dict["state"].get(m.index, {}), m)
    held = set(listed)
    unlisted = [(n, p) for n, p in named if n not in held]
    return Matched(state_dict, members, unlisted)


def _by_identity(
    optimizer: torch.optim.Optimizer, named: list[tuple[str, torch.Tensor]]
) -> list[list[str]]:
    name_of = {id(p): n for n, p in named}
    names: list[list[str]] = []
    for g, group in enumerate(optimizer.param_groups):
        for k, p in enumerate(group["params"]):
            if id(p) not in name_of:
                raise ValueError(
                    f"parameter {k} of param group {g} (shape {tuple(p.shape)}) is not among "
                    "named_params; pass every parameter the optimizer holds"
                )
        names.append([name_of[id(p)] for p in group["params"]])
    return names


def _by_name_or_position(
    state_dict: Mapping[str, Any], named: list[tuple[str, torch.Tensor]]
) -> list[list[str]]:
    groups = list(state_dict["param_groups"])
    with_names = ["param_names" in g for g in groups]
    if all(with_names):
        return [[str(n) for n in g["param_names"]] for g in groups]
    if any(with_names):
        raise ValueError(f"only some param groups of the state dict have param_names; {_HOW}")
    if len(groups) > 1:
        raise ValueError(
            f"the state dict has {len(groups)} param groups and no param_names, so which "
            "parameter is which cannot be known: torch numbers them group by group, not in "
            f"model order. {_HOW[0].upper()}{_HOW[1:]}"
        )
    count = len(groups[0]["params"]) if groups else 0
    if count != len(named):
        raise ValueError(
            f"the state dict holds {count} parameters and named_params {len(named)}: without "
            "param_names they are matched by position, so pass exactly the parameters the "
            "optimizer was built over, in its order (e.g. only those with requires_grad), "
            f"or {_HOW}"
        )
    return [[n for n, _ in named]]


def _check_shapes(entry: Mapping[str, Any], member: Member) -> None:
    """A slot shaped unlike its parameter proves the pairing wrong (the same shape
    proves nothing, which is why pairing never relies on shapes)."""
    for key, value in entry.items():
        if key in _SCALAR_KEYS or not isinstance(value, torch.Tensor):
            continue
        if tuple(value.shape) != tuple(member.param.shape):
            raise ValueError(
                f"the state dict's {key!r} of {member.name!r} has shape {tuple(value.shape)} "
                f"but the parameter {tuple(member.param.shape)}: these are not the "
                "parameters the optimizer was built over"
            )
