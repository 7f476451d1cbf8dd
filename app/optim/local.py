"""LocalOptimizer: the whole optd step pipeline in one process, no server.

Tests and benchmarks use it as the reference that the service must reproduce
bit for bit; it is also a handy way to try a configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.optim.config import parse_config
from app.optim.state import PARAM, Layout, OptimState
from app.optim.step import StepInfo, assemble_grads, run_step


class LocalOptimizer:
    def __init__(
        self,
        optimizer: str,
        params: Mapping[str, Any],
        hyperparams: Mapping[str, Any] | None = None,
        *,
        dtype: str = "float32",
        groups: Sequence[Mapping[str, Any]] | None = None,
        schedule: Mapping[str, Any] | None = None,
        max_grad_norm: float | None = None,
        check_finite: bool = True,
    ) -> None:
        raw: dict[str, Any] = {
            "optimizer": optimizer,
            "hyperparams": dict(hyperparams or {}),
            "dtype": dtype,
            "groups": [dict(g) for g in groups or []],
            "schedule": dict(schedule) if schedule is not None else None,
            "max_grad_norm": max_grad_norm,
            "check_finite": check_finite,
        }
        self.cfg = parse_config(raw).resolve()
        arrays = {k: np.asarray(v) for k, v in params.items()}
        self.layout = Layout.build({k: a.shape for k, a in arrays.items()}, self.cfg.group_of)
        flat = np.empty(self.layout.total, dtype=self.cfg.dtype)
        for spec in self.layout.specs:
            flat[spec.offset : spec.offset + spec.size] = arrays[spec.name].reshape(-1)
        self.state = OptimState.create(
            self.layout, self.cfg.optimizer, self.cfg.group_hps, self.cfg.slot_names(), flat
        )
        self.session_step = 0

    def step(self, grads: Mapping[str, Any], lr_scale: float = 1.0) -> StepInfo:
        arrays = {k: np.asarray(v) for k, v in grads.items()}
        flat, stepped = assemble_grads(self.layout, arrays, self.cfg.dtype)
        info = run_step(self.cfg, self.state, flat, stepped, self.session_step, lr_scale)
        self.session_step = info.step
        return info

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {s.name: self.state.view(PARAM, s.name).copy() for s in self.layout.specs}

    def slot(self, slot: str, name: str) -> np.ndarray:
        return self.state.view(slot, name).copy()

    @property
    def param_steps(self) -> dict[str, int]:
        return {s.name: int(self.state.steps[i]) for i, s in enumerate(self.layout.specs)}
