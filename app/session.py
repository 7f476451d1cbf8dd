"""What the engine stores as a session's `meta`: config, layout and bookkeeping.

The store treats it as opaque bytes (orjson), so it can change shape without
touching the stores; `format` guards against reading a future layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.optim import Layout, OptimConfig, OptimState
from app.problems import InvalidConfig

FORMAT = 1


class SessionOptions(BaseModel):
    """Session settings beyond the math: multi-worker mode, labels, lifetime."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["async", "sync"] = Field("async", description="DESIGN §4")
    workers: int | None = Field(None, ge=1, description="sync mode: gradients per round")
    max_staleness: int | None = Field(None, ge=0)
    staleness_lr: Literal["none", "inverse"] = "none"
    labels: dict[str, str] = Field(default_factory=dict)
    ttl_s: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _sync_needs_workers(self) -> Self:
        if self.mode == "sync" and self.workers is None:
            raise ValueError("mode 'sync' needs workers: the number of gradients per round")
        return self


@dataclass
class SessionMeta:
    config: OptimConfig
    options: SessionOptions
    layout: Layout
    steps: np.ndarray  # int64 per tensor
    scalars: dict[str, np.ndarray]
    step: int = 0
    last_loss: float | None = None
    last_lr: float | None = None  # of the last step (sync results report them)
    last_grad_norm: float | None = None
    create_fingerprint: str | None = None  # of a create sent with an Idempotency-Key
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "config": self.config.model_dump(mode="json"),
                "options": self.options.model_dump(mode="json"),
                "layout": self.layout.to_json(),
                "steps": self.steps,
                "scalars": self.scalars,
                "step": self.step,
                "last_loss": self.last_loss,
                "last_lr": self.last_lr,
                "last_grad_norm": self.last_grad_norm,
                "create_fingerprint": self.create_fingerprint,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionMeta:
        d: dict[str, Any] = orjson.loads(raw)
        if d.get("format") != FORMAT:
            raise InvalidConfig(f"session meta format {d.get('format')} is not supported")
        return cls(
            config=OptimConfig.model_validate(d["config"]),
            options=SessionOptions.model_validate(d["options"]),
            layout=Layout.from_json(d["layout"]),
            steps=np.asarray(d["steps"], dtype=np.int64).reshape(-1),
            scalars={
                k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in d["scalars"].items()
            },
            step=d["step"],
            last_loss=d["last_loss"],
            last_lr=d.get("last_lr"),
            last_grad_norm=d.get("last_grad_norm"),
            create_fingerprint=d.get("create_fingerprint"),
            created_at=d["created_at"],
            updated_at=d["updated_at"],
        )

    def state(self, slots: dict[str, np.ndarray]) -> OptimState:
        """The math view over loaded slots; shares the step/scalar arrays with this meta."""
        return OptimState(self.layout, slots, self.steps, self.scalars)
