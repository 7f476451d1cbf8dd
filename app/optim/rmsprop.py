"""RMSprop (torch.optim.RMSprop), optionally centered and with momentum."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from pydantic import Field

from app.optim.base import Array, Hyperparams, Optimizer, apply_weight_decay, ema_sq_, lerp_


class RMSpropHP(Hyperparams):
    lr: float = Field(1e-2, ge=0.0, allow_inf_nan=False, description="learning rate")
    alpha: float = Field(0.99, ge=0.0, allow_inf_nan=False, description="smoothing constant")
    eps: float = Field(1e-8, ge=0.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    momentum: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    centered: bool = False


class RMSprop(Optimizer[RMSpropHP]):
    name = "rmsprop"
    summary = "torch.optim.RMSprop"
    hyperparams_model = RMSpropHP

    def slot_names(self, hp: RMSpropHP) -> tuple[str, ...]:
        names = ["square_avg"]
        if hp.momentum > 0:
            names.append("momentum_buffer")
        if hp.centered:
            names.append("grad_avg")
        return tuple(names)

    def coefficients(
        self, hp: RMSpropHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        return {"lr": lr}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: RMSpropHP,
        t1: Array,
        t2: Array,
    ) -> None:
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, False, t1)
        sq = slots["square_avg"]
        ema_sq_(sq, g, hp.alpha, t1)
        if hp.centered:
            ga = slots["grad_avg"]
            lerp_(ga, g, 1 - hp.alpha, t1)
            np.multiply(ga, ga, out=t1)
            np.subtract(sq, t1, out=t1)
            np.sqrt(t1, out=t1)
        else:
            np.sqrt(sq, out=t1)
        t1 += hp.eps
        np.divide(g, t1, out=t1)
        if hp.momentum > 0:
            buf = slots["momentum_buffer"]
            buf *= hp.momentum
            buf += t1
            np.multiply(buf, -c["lr"], out=t1)
        else:
            t1 *= -c["lr"]
        p += t1
