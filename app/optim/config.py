"""The math configuration of a session, validated once into a `ResolvedConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from app.optim.base import Hyperparams, Optimizer, validation_problem
from app.optim.registry import get_optimizer
from app.optim.schedules import Schedule

DTYPES: dict[str, type[np.floating[Any]]] = {"float32": np.float32, "float64": np.float64}


class GroupSpec(BaseModel):
    """`{"match": ["*.bias"], "weight_decay": 0}`: glob patterns plus hyperparameter overrides."""

    model_config = ConfigDict(extra="allow")

    match: list[str] = Field(min_length=1, description="glob patterns on parameter names")

    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(BaseModel):
    """Everything that decides the numbers, and nothing about transport or storage."""

    model_config = ConfigDict(extra="forbid")

    optimizer: str = Field("adam", description="a name from GET /v1/optimizers")
    hyperparams: dict[str, Any] = Field(default_factory=dict, description="torch names")
    dtype: Literal["float32", "float64"] = "float32"
    schedule: Schedule | None = None
    max_grad_norm: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    check_finite: bool = Field(True, description="refuse NaN/Inf gradients with 422")
    groups: list[GroupSpec] = Field(default_factory=list)
    # Validated once per instance: configs are never mutated (a PATCH parses a new one),
    # and a session's config object is shared by every load of it in a process.
    _resolved: ResolvedConfig | None = PrivateAttr(None)

    def resolve(self) -> ResolvedConfig:
        if self._resolved is None:
            self._resolved = self._resolve()
        return self._resolved

    def _resolve(self) -> ResolvedConfig:
        opt = get_optimizer(self.optimizer)
        base = opt.validate(self.hyperparams)
        hps: list[Hyperparams] = [base]
        for i, group in enumerate(self.groups):
            merged = base.model_dump() | group.overrides()
            hps.append(opt.validate(merged, prefix=f"groups.{i}"))
        return ResolvedConfig(self, opt, hps, np.dtype(DTYPES[self.dtype]))


def parse_config(raw: dict[str, Any]) -> OptimConfig:
    try:
        return OptimConfig.model_validate(raw)
    except ValidationError as exc:
        raise validation_problem(exc, "") from None


@dataclass(frozen=True)
class ResolvedConfig:
    config: OptimConfig
    optimizer: Optimizer[Any]
    #: hyperparameters per group: index 0 is the session's, i + 1 is groups[i]
    group_hps: list[Hyperparams]
    dtype: np.dtype[Any]

    def group_of(self, name: str) -> int:
        """First matching group wins, like torch's explicit param_groups; else group 0."""
        for i, group in enumerate(self.config.groups):
            if any(fnmatchcase(name, pattern) for pattern in group.match):
                return i + 1
        return 0

    def slot_names(self) -> tuple[str, ...]:
        """Union over groups (a group may turn on amsgrad), in a stable order."""
        names: dict[str, None] = {}
        for hp in self.group_hps:
            names.update(dict.fromkeys(self.optimizer.slot_names(hp)))
        return tuple(names)

    def lr_factor(self, k: int) -> float:
        return 1.0 if self.config.schedule is None else self.config.schedule.factor(k)
