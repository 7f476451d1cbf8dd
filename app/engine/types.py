"""What goes into the engine and what comes out of it (no behaviour here).

The caller (who asks: a tenant, an admin, or anyone when auth is off) is an explicit
argument of every engine operation; `Caller` lives in `app.core.auth` and is re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.auth import ANONYMOUS, Caller

__all__ = ["ANONYMOUS", "BarrierPending", "Caller", "StepOutcome", "StepRequest"]

DEFAULT_WAIT_S = 30.0  # sync mode: how long a step waits for its round by default


@dataclass
class StepRequest:
    grads: dict[str, np.ndarray]
    base_version: int | None = None
    worker: str | None = None
    loss: float | None = None
    # a sharded session's commit (DESIGN §3): the part prepared under this token, and the
    # chunks' squared norms of every shard (the global norm); then `grads` is empty
    prepared: str | None = None
    sumsq: list[float] | None = None
    tokens: list[str] | None = None  # shard 0's commit: every shard's token (a repair's)


@dataclass
class BarrierPending:
    """A sync-mode step whose round did not complete within `wait` (HTTP 202)."""

    version: int
    have: int
    need: int
    round: dict[str, Any] = field(default_factory=dict)  # quorum.RoundStatus.public()


@dataclass
class StepOutcome:
    """A step's answer. `version`, `step` and `params` always describe one state of the
    session; a replay (Idempotency-Key) describes the state now and carries the replayed
    step's own figures in `replayed`."""

    version: int
    step: int
    lr: float | None
    grad_norm: float | None
    staleness: int | None
    updated: tuple[str, ...]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    replayed: dict[str, Any] | None = None
    contributors: list[str] | None = None  # sync mode: the round's workers
    missing: list[str] | None = None  # sync mode: live members who did not contribute

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "step": self.step,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "staleness": self.staleness,
        }
        if self.contributors is not None:
            out["contributors"] = self.contributors
            out["missing"] = self.missing or []
        if self.replayed is not None:
            out["replayed"] = self.replayed
        return out
