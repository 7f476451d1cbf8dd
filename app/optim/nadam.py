"""NAdam (torch.optim.NAdam): Adam with Nesterov momentum and a momentum-decay schedule."""

from __future__ import annotations

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


class NAdamHP(Betas, Hyperparams):
    lr: float = Field(2e-3, ge=0.0, allow_inf_nan=False, description="learning rate")
    eps: float = Field(1e-8, ge=0.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    momentum_decay: float = Field(4e-3, ge=0.0, allow_inf_nan=False)
    decoupled_weight_decay: bool = False
    bias_correction: bool = Field(True, description="false drops 1-beta2^t and 1-prod(mu)")


class NAdam(Optimizer[NAdamHP]):
    name = "nadam"
    summary = "torch.optim.NAdam"
    hyperparams_model = NAdamHP
    scalar_slots = {"mu_product": 1.0}

    def slot_names(self, hp: NAdamHP) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def coefficients(
        self, hp: NAdamHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        b1, b2 = hp.betas
        mu = b1 * (1.0 - 0.5 * (0.96 ** (step * hp.momentum_decay)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * hp.momentum_decay)))
        mu_product = scalars["mu_product"] * mu
        scalars["mu_product"] = mu_product
        mu_product_next = mu_product * mu_next
        if hp.bias_correction:
            bc2 = 1 - b2**step
            c_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
            c_avg = (-lr * mu_next) / (1.0 - mu_product_next)
        else:
            bc2, c_grad, c_avg = 1.0, -lr * (1.0 - mu), -lr * mu_next
        return {"lr": lr, "bc2": bc2, "c_grad": c_grad, "c_avg": c_avg}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: NAdamHP,
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
        np.divide(v, c["bc2"], out=t1)
        np.sqrt(t1, out=t1)
        t1 += hp.eps
        np.divide(g, t1, out=t2)
        t2 *= c["c_grad"]
        p += t2
        np.divide(m, t1, out=t2)
        t2 *= c["c_avg"]
        p += t2
