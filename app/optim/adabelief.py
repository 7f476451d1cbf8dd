"""AdaBelief (Zhuang et al. 2020, Algorithm 2; the official code with rectify off).

s_t = b2*s + (1-b2)*(g - m_t)^2 + eps; p -= lr/bc1 * m / (sqrt(s_t)/sqrt(bc2) + eps).
eps is added both inside (to s) and outside the sqrt, as the official code does;
DESIGN.md says the reference wins over the seeds' inside-only variant.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from pydantic import Field

from app.optim.base import Array, Betas, Hyperparams, Optimizer, apply_weight_decay


class AdaBeliefHP(Betas, Hyperparams):
    eps: float = Field(1e-16, ge=0.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    amsgrad: bool = False
    decoupled_weight_decay: bool = Field(True, description="official weight_decouple=True")
    bias_correction: bool = True


class AdaBelief(Optimizer[AdaBeliefHP]):
    name = "adabelief"
    summary = "AdaBelief (paper Algorithm 2, rectify off)"
    hyperparams_model = AdaBeliefHP

    def slot_names(self, hp: AdaBeliefHP) -> tuple[str, ...]:
        if hp.amsgrad:
            return ("exp_avg", "exp_avg_var", "max_exp_avg_var")
        return ("exp_avg", "exp_avg_var")

    def coefficients(
        self, hp: AdaBeliefHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        b1, b2 = hp.betas
        bc1 = 1 - b1**step if hp.bias_correction else 1.0
        bc2 = 1 - b2**step if hp.bias_correction else 1.0
        return {"lr": lr, "step_size": lr / bc1, "bc2_sqrt": bc2**0.5}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: AdaBeliefHP,
        t1: Array,
        t2: Array,
    ) -> None:
        b1, b2 = hp.betas
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, hp.decoupled_weight_decay, t1)
        m, s = slots["exp_avg"], slots["exp_avg_var"]
        m *= b1
        np.multiply(g, 1 - b1, out=t1)
        m += t1
        np.subtract(g, m, out=t1)
        np.multiply(t1, t1, out=t1)
        t1 *= 1 - b2
        s *= b2
        s += t1
        s += hp.eps
        if hp.amsgrad:
            smax = slots["max_exp_avg_var"]
            np.maximum(smax, s, out=smax)
            s = smax
        np.sqrt(s, out=t1)
        t1 /= c["bc2_sqrt"]
        t1 += hp.eps
        np.divide(m, t1, out=t1)
        t1 *= -c["step_size"]
        p += t1
