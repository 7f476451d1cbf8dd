"""RAdam (torch.optim.RAdam): Adam with variance rectification once rho_t > threshold."""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

import numpy as np
from pydantic import Field

from app.optim.base import (
    Array,
    Betas,
    Hyperparams,
    Optimizer,
    apply_weight_decay,
    ema_sq_,
    lerp_,
)


class RAdamHP(Betas, Hyperparams):
    eps: float = Field(1e-8, ge=0.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    decoupled_weight_decay: bool = False
    bias_correction: bool = True
    rho_threshold: float = Field(
        5.0, ge=4.0, allow_inf_nan=False, description="rectify when rho_t > this (torch 5; seeds 4)"
    )


class RAdam(Optimizer[RAdamHP]):
    name = "radam"
    summary = "torch.optim.RAdam"
    hyperparams_model = RAdamHP

    def slot_names(self, hp: RAdamHP) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def coefficients(
        self, hp: RAdamHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        b1, b2 = hp.betas
        true_bc2 = 1 - b2**step
        bc1 = 1 - b1**step if hp.bias_correction else 1.0
        bc2 = true_bc2 if hp.bias_correction else 1.0
        rho_inf = 2 / (1 - b2) - 1
        # rho_t uses the true correction even without bias_correction: it measures variance.
        rho_t = rho_inf - 2 * step * (b2**step) / true_bc2
        rect = 0.0
        if rho_t > hp.rho_threshold:
            rect = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
        return {"lr": lr, "bc1": bc1, "bc2_sqrt": bc2**0.5, "rect": rect}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: RAdamHP,
        t1: Array,
        t2: Array,
    ) -> None:
        b1, b2 = hp.betas
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, hp.decoupled_weight_decay, t1)
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        lerp_(m, g, 1 - b1, t1)
        ema_sq_(v, g, b2, t1)
        np.divide(m, c["bc1"], out=t1)
        t1 *= c["lr"]
        if c["rect"] > 0:
            np.sqrt(v, out=t2)
            t2 += hp.eps
            np.divide(c["bc2_sqrt"], t2, out=t2)
            t1 *= t2
            t1 *= c["rect"]
        p -= t1
