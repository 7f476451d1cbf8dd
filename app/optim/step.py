"""One step around the update, in DESIGN's order: non-finite check, global-norm
clipping, learning-rate schedule, then the optimizer's update."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.optim.base import CHUNK
from app.optim.config import ResolvedConfig
from app.optim.state import PARAM, Layout, OptimState, apply_update
from app.problems import InvalidTensor


@dataclass(frozen=True)
class StepInfo:
    step: int  # steps applied to the session after this one
    lr: float  # the session's lr for this step (schedule and scale applied)
    grad_norm: float  # global L2 norm of the gradient before clipping
    updated: tuple[str, ...]  # names of the stepped tensors


_ONE_VALUE = ((), (1,))


def same_shape(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """A gradient must have its parameter's shape: a [6] for a [2, 3] was once taken for
    having the size, which let a transposed or mis-flattened gradient through silently
    (issue #16). One value may be sent as a scalar or as [1], whichever the parameter is,
    as torch broadcasts between the two and JSON clients write either."""
    return tuple(got) == want or (tuple(got) in _ONE_VALUE and want in _ONE_VALUE)


def assemble_grads(
    layout: Layout, grads: Mapping[str, np.ndarray], dtype: np.dtype[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Copy named gradients into one flat buffer of the state dtype.

    Returns the buffer (only stepped ranges are written) and the sorted indices of the
    stepped tensors. Unknown names and shape mismatches are `invalid-tensor`.
    """
    if not grads:
        raise InvalidTensor("grads: at least one gradient is needed")
    flat = np.empty(layout.total, dtype=dtype)
    stepped = np.empty(len(grads), dtype=np.int64)
    for j, (name, g) in enumerate(grads.items()):
        i = layout.index.get(name)
        if i is None:
            raise InvalidTensor(
                f"grads: unknown parameter {name!r}; the session has "
                f"{len(layout.specs)} parameters (GET the session to list them)",
                errors=[{"loc": f"grads.{name}", "msg": "unknown parameter"}],
            )
        spec = layout.specs[i]
        if not same_shape(g.shape, spec.shape):
            raise InvalidTensor(
                f"grads: {name!r} has shape {list(g.shape)}, the parameter has {list(spec.shape)}; "
                "send each gradient in its parameter's shape",
                errors=[{"loc": f"grads.{name}", "msg": "shape mismatch"}],
            )
        with np.errstate(over="ignore"):
            flat[spec.offset : spec.offset + spec.size] = g.reshape(-1)
        stepped[j] = i
    stepped.sort()
    return flat, stepped


def contiguous_grads(
    layout: Layout, grads: Mapping[str, np.ndarray], dtype: np.dtype[Any]
) -> np.ndarray | None:
    """The gradients as one flat read-only array without a copy, when they already are
    one in memory: every parameter, in layout order, in the state dtype, back to back (a
    safetensors body written in the session's order, as the SDKs do). Else None."""
    specs = layout.specs
    if len(grads) != len(specs) or not specs:
        return None
    start = 0
    for (name, g), spec in zip(grads.items(), specs, strict=True):
        if name != spec.name or g.dtype != dtype or g.size != spec.size:
            return None
        if not same_shape(g.shape, spec.shape):
            return None  # assemble_grads names the mismatch
        if not g.flags.c_contiguous:
            return None
        addr = g.__array_interface__["data"][0]
        if spec.offset == 0:
            start = addr
        elif addr != start + spec.offset * dtype.itemsize:
            return None
    buf: Any = next(iter(grads.values()))
    while isinstance(buf, np.ndarray) and buf.base is not None:
        buf = buf.base
    if isinstance(buf, np.ndarray):
        return None  # an array that owns its memory: not a view over one body
    whole = np.frombuffer(buf, dtype=np.uint8)
    offset = start - whole.__array_interface__["data"][0]
    if offset < 0 or offset + layout.total * dtype.itemsize > whole.size:
        return None
    return np.frombuffer(buf, dtype=dtype, count=layout.total, offset=offset)


def _ranges(layout: Layout, stepped: np.ndarray) -> list[tuple[int, int]]:
    if stepped.size == len(layout.specs):
        return [(0, layout.total)]
    return [(int(layout.offsets[i]), int(layout.offsets[i + 1])) for i in stepped]


def chunk_sumsq(flat: np.ndarray, ranges: list[tuple[int, int]]) -> list[float]:
    """The squared norm's parts: float64 `dot(c, c)` per chunk, where chunks are the
    ranges cut at every multiple of CHUNK of the flat layout, in order. A sharded session
    cuts its shards at such multiples, so the concatenation of the shards' lists is this
    list, bit for bit (DESIGN §3)."""
    out: list[float] = []
    for lo, hi in ranges:
        a = lo
        while a < hi:
            b = min(hi, (a // CHUNK + 1) * CHUNK)
            c = flat[a:b].astype(np.float64)  # float32 squares overflow
            out.append(float(np.dot(c, c)))
            a = b
    return out


def norm_of(sumsq: list[float]) -> float:
    """The global norm from the chunks' squared norms, summed in order (one definition for
    a step, a shard's commit and the replay of either)."""
    total = 0.0
    for x in sumsq:
        total += x
    return math.sqrt(total)


def global_norm(flat: np.ndarray, ranges: list[tuple[int, int]]) -> float:
    """L2 norm accumulated in float64 chunk by chunk (exact enough for float32 grads)."""
    return norm_of(chunk_sumsq(flat, ranges))


def runs(layout: Layout, stepped: np.ndarray) -> list[tuple[int, int]]:
    """The stepped tensors' ranges, consecutive ones merged (all of them: one range)."""
    if stepped.size == len(layout.specs):
        return [(0, layout.total)]
    out: list[tuple[int, int]] = []
    for i in stepped:
        lo, hi = int(layout.offsets[i]), int(layout.offsets[i + 1])
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _check_finite(layout: Layout, grad: np.ndarray, stepped: np.ndarray) -> None:
    for i in stepped:
        spec = layout.specs[i]
        if not np.isfinite(grad[spec.offset : spec.offset + spec.size]).all():
            raise InvalidTensor(
                f"grads: {spec.name!r} contains NaN or Inf; nothing was applied "
                "(check the loss, or lower the learning rate)",
                errors=[{"loc": f"grads.{spec.name}", "msg": "non-finite value"}],
            )


def run_step(
    cfg: ResolvedConfig,
    state: OptimState,
    grad: np.ndarray,
    stepped: np.ndarray,
    session_step: int,
    lr_scale: float = 1.0,
) -> StepInfo:
    """Apply one step in place. Validation happens before any state is touched, so a
    refused step leaves `state` exactly as it was."""
    norm = grad_norm(cfg, state.layout, grad, stepped)
    return apply_step(cfg, state, grad, stepped, session_step, lr_scale, norm)


def grad_norm(cfg: ResolvedConfig, layout: Layout, grad: np.ndarray, stepped: np.ndarray) -> float:
    """The gradient's global norm, after refusing non-finite values (when configured)."""
    return norm_checked(cfg, layout, grad, stepped, grad_sumsq(layout, grad, stepped))


def grad_sumsq(layout: Layout, grad: np.ndarray, stepped: np.ndarray) -> list[float]:
    with np.errstate(over="ignore", invalid="ignore"):
        return chunk_sumsq(grad, runs(layout, stepped))


def norm_checked(
    cfg: ResolvedConfig,
    layout: Layout,
    grad: np.ndarray,
    stepped: np.ndarray,
    sumsq: list[float],
) -> float:
    """The norm of `sumsq`, after refusing non-finite values of `grad` (when configured)."""
    with np.errstate(over="ignore", invalid="ignore"):
        norm = norm_of(sumsq)
    # A finite norm proves every value finite, so the explicit scan runs only when the
    # norm is not (NaN/Inf, or squares that overflowed).
    if cfg.config.check_finite and not math.isfinite(norm):
        _check_finite(layout, grad, stepped)
    return norm


def apply_step(
    cfg: ResolvedConfig,
    state: OptimState,
    grad: np.ndarray,
    stepped: np.ndarray,
    session_step: int,
    lr_scale: float,
    norm: float,
) -> StepInfo:
    """Clip with the given norm, then the schedule and the update, in place (`grad` is
    scratch). Replaying a logged step calls this with the norm the step computed, so the
    replay does exactly the arithmetic the step did."""
    ranges = _ranges(state.layout, stepped)
    max_norm = cfg.config.max_grad_norm
    if max_norm is not None and math.isfinite(norm):
        coef = max_norm / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_
        if coef < 1.0:
            for lo, hi in ranges:
                grad[lo:hi] *= coef
    factor = cfg.lr_factor(session_step) * lr_scale
    lrs = [hp.lr * factor for hp in cfg.group_hps]
    try:
        # An overflow would leave Inf/NaN in the state: refuse the step instead. The caller
        # owns these arrays and commits nothing when this raises.
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            apply_update(cfg.optimizer, cfg.group_hps, state, grad, stepped, lrs)
            # a step size beyond the dtype (lr 1e308 in float32) becomes Inf without raising
            param = state.slots[PARAM]
            for lo, hi in ranges:
                if not np.isfinite(param[lo:hi]).all():
                    raise FloatingPointError("the parameters overflowed")
    except FloatingPointError as exc:
        raise InvalidTensor(
            f"this step would make the optimizer state non-finite ({exc}); nothing was "
            "applied: lower the learning rate, clip the gradients (max_grad_norm) or scale "
            "the loss"
        ) from None
    names = tuple(state.layout.specs[i].name for i in stepped)
    return StepInfo(session_step + 1, cfg.group_hps[0].lr * factor, norm, names)
