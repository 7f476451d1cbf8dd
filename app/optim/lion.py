"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Update with the sign of an interpolation of momentum and gradient; every element
moves by exactly lr (plus decoupled weight decay).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from pydantic import Field

from app.optim.base import Array, Betas, Hyperparams, Optimizer, apply_weight_decay, lerp_


class LionHP(Betas, Hyperparams):
    lr: float = Field(1e-4, ge=0.0, allow_inf_nan=False, description="learning rate")
    betas: tuple[float, float] = Field((0.9, 0.99), description="interpolation, momentum decay")
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="decoupled")


class Lion(Optimizer[LionHP]):
    name = "lion"
    summary = "Lion (paper, Algorithm 2)"
    hyperparams_model = LionHP

    def slot_names(self, hp: LionHP) -> tuple[str, ...]:
        return ("exp_avg",)

    def coefficients(
        self, hp: LionHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        return {"lr": lr}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: LionHP,
        t1: Array,
        t2: Array,
    ) -> None:
        b1, b2 = hp.betas
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, True, t1)
        m = slots["exp_avg"]
        np.multiply(m, b1, out=t1)
        np.multiply(g, 1 - b1, out=t2)
        t1 += t2
        np.sign(t1, out=t1)
        t1 *= -c["lr"]
        p += t1
        lerp_(m, g, 1 - b2, t1)
