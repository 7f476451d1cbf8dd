"""Name -> optimizer. `GET /v1/optimizers` is generated from this: adding an optimizer
is one file plus one line here."""

from __future__ import annotations

from typing import Any

from app.optim.adabelief import AdaBelief
from app.optim.adagrad import Adagrad
from app.optim.adam import Adam, AdamW
from app.optim.adamax import Adamax
from app.optim.base import Optimizer
from app.optim.lion import Lion
from app.optim.nadam import NAdam
from app.optim.radam import RAdam
from app.optim.rmsprop import RMSprop
from app.optim.sgd import SGD
from app.problems import InvalidConfig

REGISTRY: dict[str, Optimizer[Any]] = {
    opt.name: opt
    for opt in (
        SGD(),
        Adam(),
        AdamW(),
        NAdam(),
        RAdam(),
        Adamax(),
        Adagrad(),
        RMSprop(),
        AdaBelief(),
        Lion(),
    )
}


def get_optimizer(name: str) -> Optimizer[Any]:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(REGISTRY)
        raise InvalidConfig(
            f"optimizer: unknown optimizer {name!r}; choose one of: {known}",
            errors=[{"loc": "optimizer", "msg": f"unknown optimizer; choose one of: {known}"}],
        ) from None


def list_optimizers() -> list[dict[str, Any]]:
    """Every optimizer with its hyperparameter JSON schema and defaults."""
    return [
        {
            "name": opt.name,
            "reference": opt.summary,
            "slots": list(opt.slot_names(opt.hyperparams_model())),
            "hyperparams_schema": opt.hyperparams_model.model_json_schema(),
            "defaults": opt.defaults(),
        }
        for opt in REGISTRY.values()
    ]
