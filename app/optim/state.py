"""Flat optimizer state: every slot is one contiguous array over all parameters.

Parameters are laid out group by group, so a group is one contiguous range and a
step over all of it is a handful of vectorised numpy calls however many tensors
it holds. Per-tensor bookkeeping (step counts, NAdam's mu_product) lives in small
arrays indexed by tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.optim.base import Hyperparams, Optimizer

PARAM = "param"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    offset: int
    size: int
    group: int


class Layout:
    """Names, shapes and offsets of the parameters inside the flat arrays."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = list(specs)
        self.index = {s.name: i for i, s in enumerate(self.specs)}
        self.total = sum(s.size for s in self.specs)
        self.groups = np.array([s.group for s in self.specs], dtype=np.int64)
        self.offsets = np.array([s.offset for s in self.specs] + [self.total], dtype=np.int64)

    @classmethod
    def build(cls, shapes: Mapping[str, tuple[int, ...]], group_of: Any) -> Layout:
        named = [
            (group_of(name), i, name, tuple(shape))
            for i, (name, shape) in enumerate(shapes.items())
        ]
        named.sort(key=lambda t: (t[0], t[1]))  # by group, then the order the client gave
        specs, offset = [], 0
        for group, _, name, shape in named:
            size = math.prod(shape)
            specs.append(TensorSpec(name, shape, offset, size, group))
            offset += size
        return cls(specs)

    def to_json(self) -> list[list[Any]]:
        return [[s.name, list(s.shape), s.group] for s in self.specs]

    @classmethod
    def from_json(cls, items: list[list[Any]], max_elements: int = 2**40) -> Layout:
        """Rebuild a stored or uploaded layout, refusing anything malformed (ValueError)."""
        specs, offset = [], 0
        if not isinstance(items, list):
            raise ValueError("layout must be a list of [name, shape, group]")
        for item in items:
            if not (isinstance(item, list) and len(item) == 3):
                raise ValueError("layout entries are [name, shape, group]")
            name, shape, group = item
            if not isinstance(name, str) or not isinstance(shape, list):
                raise ValueError("layout: a name is a string and a shape a list")
            if not all(type(d) is int and 0 <= d <= max_elements for d in shape):
                raise ValueError(f"layout: {name!r} has an invalid shape {shape}")
            if type(group) is not int or group < 0:
                raise ValueError(f"layout: {name!r} has an invalid group {group!r}")
            size = math.prod(shape)
            if size > max_elements or offset + size > max_elements:
                raise ValueError(f"layout: more than {max_elements} elements")
            specs.append(TensorSpec(name, tuple(shape), offset, size, group))
            offset += size
        return cls(specs)


@dataclass
class OptimState:
    layout: Layout
    slots: dict[str, np.ndarray]  # PARAM plus the optimizer's slots, flat, state dtype
    steps: np.ndarray  # int64 per tensor
    scalars: dict[str, np.ndarray] = field(default_factory=dict)  # float64 per tensor

    @classmethod
    def create(
        cls,
        layout: Layout,
        optimizer: Optimizer[Any],
        group_hps: Sequence[Hyperparams],
        slot_names: Sequence[str],
        params: np.ndarray,
    ) -> OptimState:
        n = len(layout.specs)
        slots = {PARAM: params}
        for slot in slot_names:
            arr = np.zeros(layout.total, dtype=params.dtype)
            for g, hp in enumerate(group_hps):
                fill = optimizer.slot_fill(slot, hp)
                if fill != 0.0:
                    lo, hi = group_range(layout, g)
                    arr[lo:hi] = fill
            slots[slot] = arr
        scalars = {k: np.full(n, v, dtype=np.float64) for k, v in optimizer.scalar_slots.items()}
        return cls(layout, slots, np.zeros(n, dtype=np.int64), scalars)

    def view(self, slot: str, name: str) -> np.ndarray:
        spec = self.layout.specs[self.layout.index[name]]
        return self.slots[slot][spec.offset : spec.offset + spec.size].reshape(spec.shape)


def group_range(layout: Layout, group: int) -> tuple[int, int]:
    idx = np.flatnonzero(layout.groups == group)
    if idx.size == 0:
        return 0, 0
    return int(layout.offsets[idx[0]]), int(layout.offsets[idx[-1] + 1])


def runs(state: OptimState, stepped: np.ndarray) -> list[tuple[int, int]]:
    """Split the stepped tensors (sorted indices) into maximal runs of neighbours that
    share group, step count and scalar state: each run is one vectorised update."""
    if stepped.size == 0:
        return []
    if stepped.size == 1:  # one tensor (the common small session): no arrays to compare
        return [(int(stepped[0]), int(stepped[0]))]
    brk = np.diff(stepped) != 1
    for key in (state.layout.groups, state.steps, *state.scalars.values()):
        vals = key[stepped]
        brk |= vals[1:] != vals[:-1]
    starts = np.concatenate(([0], np.flatnonzero(brk) + 1))
    ends = np.concatenate((starts[1:], [stepped.size]))
    return [(int(stepped[a]), int(stepped[b - 1])) for a, b in zip(starts, ends, strict=True)]


def apply_update(
    optimizer: Optimizer[Any],
    group_hps: Sequence[Hyperparams],
    state: OptimState,
    grad: np.ndarray,
    stepped: np.ndarray,
    lrs: Sequence[float],
) -> None:
    """One optimizer step for the stepped tensors; `grad` is a flat scratch buffer."""
    offsets = state.layout.offsets
    for first, last in runs(state, stepped):
        group = int(state.layout.groups[first])
        hp = group_hps[group]
        lo, hi = int(offsets[first]), int(offsets[last + 1])
        step = int(state.steps[first]) + 1
        scalars = {k: float(v[first]) for k, v in state.scalars.items()}
        slots = {s: state.slots[s][lo:hi] for s in optimizer.slot_names(hp)}
        optimizer.update(
            state.slots[PARAM][lo:hi], grad[lo:hi], slots, step, lrs[group], hp, scalars
        )
        state.steps[first : last + 1] = step
        for k, v in scalars.items():
            state.scalars[k][first : last + 1] = v
