"""Adagrad (torch.optim.Adagrad), dense gradients."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from pydantic import Field

from app.optim.base import Array, Hyperparams, Optimizer, apply_weight_decay


class AdagradHP(Hyperparams):
    lr: float = Field(1e-2, ge=0.0, allow_inf_nan=False, description="learning rate")
    lr_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    initial_accumulator_value: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    eps: float = Field(1e-10, ge=0.0, allow_inf_nan=False)


class Adagrad(Optimizer[AdagradHP]):
    name = "adagrad"
    summary = "torch.optim.Adagrad"
    hyperparams_model = AdagradHP

    def slot_names(self, hp: AdagradHP) -> tuple[str, ...]:
        return ("sum",)

    def slot_fill(self, slot: str, hp: AdagradHP) -> float:
        return hp.initial_accumulator_value

    def coefficients(
        self, hp: AdagradHP, step: int, lr: float, scalars: MutableMapping[str, float]
    ) -> dict[str, float]:
        return {"lr": lr, "clr": lr / (1 + (step - 1) * hp.lr_decay)}

    def update_chunk(
        self,
        p: Array,
        g: Array,
        slots: Mapping[str, Array],
        c: Mapping[str, float],
        hp: AdagradHP,
        t1: Array,
        t2: Array,
    ) -> None:
        if hp.maximize:
            np.negative(g, out=g)
        apply_weight_decay(p, g, c["lr"], hp.weight_decay, False, t1)
        s = slots["sum"]
        np.multiply(g, g, out=t1)
        s += t1
        np.sqrt(s, out=t1)
        t1 += hp.eps
        np.divide(g, t1, out=t1)
        t1 *= -c["clr"]
        p += t1
