"""What runs a step's math for the engine, and replays a logged one exactly (DESIGN §5).

`execute` is `optim.apply_step` plus what the gradient log needs: when the store will keep
the step as a log entry (`log`), it also returns the entry.

The Redis store may persist a big session's step as its gradient (4 bytes a parameter in
float32) instead of rewriting every slot (12 for Adam), with a full snapshot every
`OPTD_LOG_STEPS` steps. A reader that is behind replays the entries since its copy (or
since the snapshot) with `replay`, which runs the very function the step ran on the very
inputs: the meta the step started from (config, step counts, scalar state), the gradient
before clipping, the lr scale and the gradient norm the step computed. Same code, same
bits: numpy's elementwise float arithmetic is correctly rounded, and the one reduction
(the norm) is recorded rather than recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from app.engine.meta import SessionMeta
from app.optim import ResolvedConfig, StepInfo, apply_step, assemble_grads, grad_norm
from app.optim.state import OptimState
from app.store.base import StepLog


def execute(
    cfg: ResolvedConfig,
    meta: SessionMeta,
    state: OptimState,
    grad: np.ndarray,
    stepped: np.ndarray,
    scale: float,
    log: bool,
    kept: np.ndarray | None = None,
    norm: float | None = None,
) -> tuple[StepInfo, StepLog | None]:
    """`run_step` that also returns the step as a log entry when `log`: with `kept`, a
    read-only copy of `grad` the caller already has, else one copy of the gradient taken
    before clipping and the update use `grad` as scratch. `norm`: the global norm a sharded
    session's commit was given (DESIGN §3), instead of this gradient's own."""
    before = meta.to_bytes() if log else b""  # before the step advances steps and scalars
    if norm is None:
        norm = grad_norm(cfg, meta.layout, grad, stepped)
    if log and kept is None:
        kept = grad.copy()
    info = apply_step(cfg, state, grad, stepped, meta.step, scale, norm)
    if not log or kept is None:
        return info, None
    tail = orjson.dumps({"stepped": stepped.tolist(), "scale": scale, "norm": repr(norm)})
    return info, StepLog(before + b"\n" + tail, kept)


def execute_grads(
    cfg: ResolvedConfig,
    meta: SessionMeta,
    state: OptimState,
    grads: Mapping[str, np.ndarray],
    scale: float,
    log: bool,
    view: np.ndarray | None,
    norm: float | None = None,
) -> tuple[StepInfo, StepLog | None]:
    """A step from named gradients (the HTTP request's). `view`: the gradients as one flat
    array when they lie in the body that way (`contiguous_grads`); then the log keeps that
    view, no second copy."""
    if view is None:
        flat, stepped = assemble_grads(meta.layout, grads, cfg.dtype)
    else:
        flat, stepped = view.copy(), np.arange(len(meta.layout.specs), dtype=np.int64)
    return execute(cfg, meta, state, flat, stepped, scale, log, view, norm)


def replay(slots: dict[str, np.ndarray], entries: list[tuple[bytes, np.ndarray]]) -> None:
    """Advance `slots` (every slot of the session, writeable) by the logged steps, oldest
    first, exactly as the steps advanced them."""
    for record, grad in entries:
        raw, _, tail = record.rpartition(b"\n")
        d: dict[str, Any] = orjson.loads(tail)
        meta = SessionMeta.from_bytes(raw)
        g = grad if grad.flags.writeable else grad.copy()
        stepped = np.asarray(d["stepped"], dtype=np.int64)
        cfg = meta.config.resolve()
        apply_step(cfg, meta.state(slots), g, stepped, meta.step, d["scale"], float(d["norm"]))
