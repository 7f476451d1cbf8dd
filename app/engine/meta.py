"""What the engine stores as a session's `meta`: config, layout and bookkeeping.

The store treats it as opaque bytes, so it can change shape without touching the
stores. Checkpoints carry it as one JSON document whose `format` guards against
reading a future layout.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.auth import TENANT_LABEL
from app.optim import Layout, OptimConfig, OptimState
from app.problems import InvalidConfig

FORMAT = 1
_STATIC_KEYS = ("config", "options", "layout", "tenant")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_STATIC_CACHE_SIZE = 512


@dataclass(frozen=True)
class _Static:
    config: OptimConfig
    options: SessionOptions
    layout: Layout
    tenant: str | None
    raw: bytes


_parsed: OrderedDict[bytes, _Static] = OrderedDict()


def _parse_static(raw: bytes) -> _Static:
    """Validate config, options and layout once per distinct document per process."""
    hit = _parsed.get(raw)
    if hit is not None:
        _parsed.move_to_end(raw)
        return hit
    d = orjson.loads(raw)
    parsed = _Static(
        OptimConfig.model_validate(d["config"]),
        SessionOptions.model_validate(d["options"]),
        Layout.from_json(d["layout"]),
        d.get("tenant"),
        raw,
    )
    _parsed[raw] = parsed
    if len(_parsed) > _STATIC_CACHE_SIZE:
        _parsed.popitem(last=False)
    return parsed


class SessionOptions(BaseModel):
    """Session settings beyond the math: multi-worker mode, labels, lifetime."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["async", "sync"] = Field("async", description="DESIGN §4")
    workers: int | None = Field(None, ge=1, description="sync mode: gradients per round")
    min_workers: int | None = Field(
        None, ge=1, description="sync mode: a round may close early with this many (<= workers)"
    )
    round_timeout_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="sync mode: close this long after a round's first gradient",
    )
    worker_lease_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="sync mode: a worker is live this long after it was heard from",
    )
    max_staleness: int | None = Field(None, ge=0)
    staleness_lr: Literal["none", "inverse"] = "none"
    labels: dict[str, str] = Field(default_factory=dict)
    ttl_s: int | None = Field(None, gt=0, le=10 * 365 * 86_400, description="at most 10 years")
    shards: int | None = Field(None, ge=1, le=64, description="DESIGN §3 sharded sessions")
    # set by the server on a shard session: the session it is part of, and which part
    shard_of: str | None = None
    shard_index: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _labels_not_reserved(self) -> Self:
        for key in self.labels:
            if key.startswith("optd/"):
                raise ValueError(f"label {key!r}: the prefix optd/ is reserved")
        return self

    @model_validator(mode="after")
    def _sync_needs_workers(self) -> Self:
        if self.mode == "sync" and self.workers is None:
            raise ValueError("mode 'sync' needs workers: the number of gradients per round")
        elastic = (self.min_workers, self.round_timeout_s, self.worker_lease_s)
        if self.mode != "sync" and any(v is not None for v in elastic):
            raise ValueError(
                "min_workers, round_timeout_s and worker_lease_s apply to mode 'sync' only"
            )
        if self.shards is not None and self.shards > 1 and self.mode != "async":
            raise ValueError("shards apply to mode 'async' only")
        if self.min_workers is not None and self.min_workers > (self.workers or 0):
            raise ValueError(f"min_workers {self.min_workers} is more than workers {self.workers}")
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
    # the last sync round: {"version", "contributors", "missing"} (its workers' answers)
    last_round: dict[str, Any] | None = None
    # shard 0 of a sharded session: its last commit's every-shard tokens and sumsq, so
    # any client can finish that step on shards a dead client left behind (DESIGN §3)
    last_shard_step: dict[str, Any] | None = None
    create_fingerprint: str | None = None  # of a create sent with an Idempotency-Key
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    tenant: str | None = None  # the owner; None when created with auth off
    _static_tenant: str | None = field(default=None, repr=False)
    # (config, options, layout, their JSON): compared by identity, so a PATCH that
    # assigns a new config re-serialises, and an unchanged session never does
    _static_cache: tuple[Any, Any, Any, bytes] | None = field(default=None, repr=False)

    def store_labels(self) -> dict[str, str]:
        """The labels the store filters lists on: the user's plus the owning tenant's."""
        if self.tenant is None:
            return dict(self.options.labels)
        return {**self.options.labels, TENANT_LABEL: self.tenant}

    def to_document(self) -> dict[str, Any]:
        """The whole meta as one JSON-able dict (`format` 1): what checkpoints carry."""
        return {"format": FORMAT, **orjson.loads(self._static()), **self._dynamic()}

    @classmethod
    def from_document(cls, d: dict[str, Any]) -> SessionMeta:
        if d.get("format") != FORMAT:
            raise InvalidConfig(f"session meta format {d.get('format')} is not supported")
        static = orjson.dumps({k: d.get(k) if k == "tenant" else d[k] for k in _STATIC_KEYS})
        return cls._build(_parse_static(static), d)

    def to_bytes(self) -> bytes:
        """What the store keeps: the static part (config, options, layout) and the part
        every step changes, as two orjson lines. Readers parse the static line once per
        process and reuse it (it is the expensive part for many tensors)."""
        return self._static() + b"\n" + orjson.dumps(self._dynamic(), option=_NUMPY)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionMeta:
        static, sep, dynamic = raw.partition(b"\n")
        if not sep:
            raise InvalidConfig("session meta is not in the stored format")
        return cls._build(_parse_static(static), orjson.loads(dynamic))

    @classmethod
    def _build(cls, parsed: _Static, d: dict[str, Any]) -> SessionMeta:
        meta = cls(
            config=parsed.config,
            options=parsed.options,
            layout=parsed.layout,
            tenant=parsed.tenant,
            steps=np.asarray(d["steps"], dtype=np.int64).reshape(-1),
            scalars={
                k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in d["scalars"].items()
            },
            step=d["step"],
            last_loss=d["last_loss"],
            last_lr=d.get("last_lr"),
            last_grad_norm=d.get("last_grad_norm"),
            last_round=d.get("last_round"),
            last_shard_step=d.get("last_shard_step"),
            create_fingerprint=d.get("create_fingerprint"),
            created_at=d["created_at"],
            updated_at=d["updated_at"],
        )
        meta._static_cache = (parsed.config, parsed.options, parsed.layout, parsed.raw)
        meta._static_tenant = parsed.tenant
        return meta

    def _static(self) -> bytes:
        cached = self._static_cache
        if (
            cached is not None
            and cached[0] is self.config
            and cached[1] is self.options
            and cached[2] is self.layout
            and self._static_tenant == self.tenant
        ):
            return cached[3]
        raw = orjson.dumps(
            {
                "config": self.config.model_dump(mode="json"),
                "options": self.options.model_dump(mode="json"),
                "layout": self.layout.to_json(),
                "tenant": self.tenant,
            }
        )
        self._static_cache = (self.config, self.options, self.layout, raw)
        self._static_tenant = self.tenant
        return raw

    def _dynamic(self) -> dict[str, Any]:
        return {
            "steps": self.steps.tolist(),
            "scalars": {k: v.tolist() for k, v in self.scalars.items()},
            "step": self.step,
            "last_loss": self.last_loss,
            "last_lr": self.last_lr,
            "last_grad_norm": self.last_grad_norm,
            "create_fingerprint": self.create_fingerprint,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        } | (
            ({"last_round": self.last_round} if self.last_round is not None else {})
            | ({"last_shard_step": self.last_shard_step} if self.last_shard_step else {})
        )

    def state(self, slots: dict[str, np.ndarray]) -> OptimState:
        """The math view over loaded slots; shares the step/scalar arrays with this meta."""
        return OptimState(self.layout, slots, self.steps, self.scalars)
