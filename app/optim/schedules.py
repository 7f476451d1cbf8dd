"""Learning-rate schedules: a factor on `lr`, separate from the update rule (as in optax).

`factor(k)` is evaluated at k = the number of steps the session already took
(k = 0 on its first step), so `step` and `exponential` equal torch's StepLR and
ExponentialLR, and `cosine` without warmup equals CosineAnnealingLR, when the
torch scheduler is stepped after each optimizer step.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def factor(self, k: int) -> float:
        raise NotImplementedError


class Constant(_Schedule):
    name: Literal["constant"] = "constant"

    def factor(self, k: int) -> float:
        return 1.0


class LinearWarmup(_Schedule):
    """lr * min(1, t / warmup_steps), t = k + 1: the first step already moves."""

    name: Literal["linear_warmup"] = "linear_warmup"
    warmup_steps: int = Field(ge=1)

    def factor(self, k: int) -> float:
        return min(1.0, (k + 1) / self.warmup_steps)


class Cosine(_Schedule):
    """Linear warmup, then cosine decay from lr to min_lr_ratio * lr at total_steps."""

    name: Literal["cosine"] = "cosine"
    total_steps: int = Field(ge=1)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _warmup_inside(self) -> Self:
        if self.warmup_steps >= self.total_steps:
            raise ValueError("warmup_steps must be smaller than total_steps")
        return self

    def factor(self, k: int) -> float:
        t = k + 1
        if t <= self.warmup_steps:
            return t / self.warmup_steps
        progress = min(1.0, (k - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2


class InverseSqrt(_Schedule):
    """The Adam paper's lr / sqrt(t); with warmup, linear up to lr then sqrt(warmup / t)."""

    name: Literal["inverse_sqrt"] = "inverse_sqrt"
    warmup_steps: int = Field(0, ge=0)

    def factor(self, k: int) -> float:
        t = k + 1
        if t <= self.warmup_steps:
            return t / self.warmup_steps
        return math.sqrt(max(self.warmup_steps, 1) / t)


class StepDecay(_Schedule):
    """lr * gamma ** (k // step_size), torch's StepLR."""

    name: Literal["step"] = "step"
    step_size: int = Field(ge=1)
    gamma: float = Field(0.1, gt=0.0, allow_inf_nan=False)

    def factor(self, k: int) -> float:
        return float(self.gamma ** (k // self.step_size))


class Exponential(_Schedule):
    """lr * gamma ** k, torch's ExponentialLR."""

    name: Literal["exponential"] = "exponential"
    gamma: float = Field(gt=0.0, allow_inf_nan=False)

    def factor(self, k: int) -> float:
        return float(self.gamma**k)


Schedule = Annotated[
    Constant | LinearWarmup | Cosine | InverseSqrt | StepDecay | Exponential,
    Field(discriminator="name"),
]

SCHEDULE_NAMES = ("constant", "linear_warmup", "cosine", "inverse_sqrt", "step", "exponential")
