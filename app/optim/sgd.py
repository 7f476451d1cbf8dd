"""SGD with momentum, dampening, Nesterov (torch.optim.SGD)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Self

import numpy as np
from pydantic import Field, model_validator

from app.optim.base import Array, Hyperparams, Optimizer, apply_weight_decay


class SGDHP(Hyperparams):
    momentum: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    dampening: float = Field(0.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> Self:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0")
        return self


class SGD(Optimizer[SGDHP]):
    name = "sgd"
    summary = "torch.optim.SGD"
    hyperparams_model = SGDHP

    def slot_names(self, hp: SGDHP) -> tuple[str, ...]:
        return ("momentum_buffer",) if hp.momentum != 0 else ()

    def coefficients(
        self, hp: SGDHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        # torch creates the buffer as a copy of the first gradient, not zeros.
        return {"lr": lr, "first": 1.0 if step == 1 else 0.0}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: SGDHP,
        t1: Array,
        t2: Array,
    ) -> None:
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, False, t1)
        d = g
        if hp.momentum != 0:
            buf = slots["momentum_buffer"]
            if c["first"]:
                buf[...] = g
            else:
                buf *= hp.momentum
                np.multiply(g, 1 - hp.dampening, out=t1)
                buf += t1
            if hp.nesterov:
                np.multiply(buf, hp.momentum, out=t1)
                g += t1
            else:
                d = buf
        np.multiply(d, -c["lr"], out=t1)
        p += t1
