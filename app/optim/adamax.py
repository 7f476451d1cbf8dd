"""Adamax (torch.optim.Adamax): Adam with the infinity norm."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from pydantic import Field

from app.optim.base import Array, Betas, Hyperparams, Optimizer, apply_weight_decay, lerp_


class AdamaxHP(Betas, Hyperparams):
    lr: float = Field(2e-3, ge=0.0, allow_inf_nan=False, description="learning rate")
    eps: float = Field(1e-8, ge=0.0, allow_inf_nan=False, description="added to |g| as torch does")
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    bias_correction: bool = True


class Adamax(Optimizer[AdamaxHP]):
    name = "adamax"
    summary = "torch.optim.Adamax"
    hyperparams_model = AdamaxHP

    def slot_names(self, hp: AdamaxHP) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def coefficients(
        self, hp: AdamaxHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        bc1 = 1 - hp.betas[0] ** step if hp.bias_correction else 1.0
        return {"lr": lr, "clr": lr / bc1}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: AdamaxHP,
        t1: Array,
        t2: Array,
    ) -> None:
        b1, b2 = hp.betas
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, False, t1)
        m, u = slots["exp_avg"], slots["exp_inf"]
        lerp_(m, g, 1 - b1, t1)
        u *= b2
        np.abs(g, out=t1)
        t1 += hp.eps
        np.maximum(u, t1, out=u)
        np.divide(m, u, out=t1)
        t1 *= -c["clr"]
        p += t1
