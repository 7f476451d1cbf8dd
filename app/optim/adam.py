"""Adam and AdamW (torch.optim.Adam / AdamW semantics, plus `bias_correction`)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Literal

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


class AdamHP(Betas, Hyperparams):
    eps: float = Field(1e-8, ge=0.0, allow_inf_nan=False, description="added to the denominator")
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    amsgrad: bool = Field(False, description="use the max of past second moments (AMSGrad)")
    decoupled_weight_decay: bool = Field(False, description="AdamW-style decay p *= 1 - lr*wd")
    bias_correction: bool = Field(True, description="false = the Adam paper's ablation (6.4)")


class AdamWHP(AdamHP):
    weight_decay: float = Field(1e-2, ge=0.0, allow_inf_nan=False)
    decoupled_weight_decay: Literal[True] = Field(True, description="always true for AdamW")


class Adam(Optimizer[AdamHP]):
    name = "adam"
    summary = "torch.optim.Adam"
    hyperparams_model = AdamHP

    def slot_names(self, hp: AdamHP) -> tuple[str, ...]:
        if hp.amsgrad:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("exp_avg", "exp_avg_sq")

    def coefficients(
        self, hp: AdamHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        b1, b2 = hp.betas
        bc1 = 1 - b1**step if hp.bias_correction else 1.0
        bc2 = 1 - b2**step if hp.bias_correction else 1.0
        bc2_sqrt = bc2**0.5
        # m / (sqrt(v)/c + eps) == c*m / (sqrt(v) + eps*c): one pass fewer per chunk.
        return {"lr": lr, "eps_c": hp.eps * bc2_sqrt, "scale": -(lr / bc1) * bc2_sqrt}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: AdamHP,
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
        if hp.amsgrad:
            vmax = slots["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        np.sqrt(v, out=t1)
        t1 += c["eps_c"]
        np.divide(m, t1, out=t1)
        t1 *= c["scale"]
        p += t1


class AdamW(Adam):
    name = "adamw"
    summary = "torch.optim.AdamW (decoupled weight decay)"
    hyperparams_model = AdamWHP
