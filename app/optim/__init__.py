"""Pure optimizer math: no I/O, no FastAPI, no Redis (DESIGN.md §2)."""

from app.optim.base import Hyperparams, Optimizer
from app.optim.config import OptimConfig, ResolvedConfig, parse_config
from app.optim.registry import REGISTRY, get_optimizer, list_optimizers
from app.optim.state import PARAM, Layout, OptimState
from app.optim.step import StepInfo, apply_step, assemble_grads, grad_norm, run_step

__all__ = [
    "PARAM",
    "REGISTRY",
    "Hyperparams",
    "Layout",
    "OptimConfig",
    "OptimState",
    "Optimizer",
    "ResolvedConfig",
    "StepInfo",
    "apply_step",
    "assemble_grads",
    "get_optimizer",
    "grad_norm",
    "list_optimizers",
    "parse_config",
    "run_step",
]
