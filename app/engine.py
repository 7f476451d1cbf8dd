"""One step: load -> validate -> schedule/clip -> optim -> commit (DESIGN.md §1).

The engine owns the meaning of a session (its meta and slots); the store only
keeps bytes, and the API only translates HTTP. A step is a compare-and-set on the
session's version, so any number of API processes may serve one session: a lost
race reloads and recomputes, and nothing is ever applied twice or half.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson

from app.core.config import Settings
from app.metrics import Metrics
from app.optim import PARAM, ResolvedConfig, StepInfo, assemble_grads, run_step
from app.optim.config import OptimConfig
from app.problems import Conflict, IdempotencyMismatch, PreconditionFailed, StaleGradient
from app.session import SessionMeta
from app.store.base import IdempotencyRecord, SessionStore, StoredSession

T = TypeVar("T")
MAX_ATTEMPTS = 50


@dataclass
class StepRequest:
    grads: dict[str, np.ndarray]
    base_version: int | None = None
    worker: str | None = None
    loss: float | None = None


@dataclass
class StepOutcome:
    version: int
    step: int
    lr: float
    grad_norm: float
    staleness: int | None
    updated: tuple[str, ...]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    replayed: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "step": self.step,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            "staleness": self.staleness,
        }


class Engine:
    def __init__(self, store: SessionStore, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # One in-process lock per session: concurrent requests in this process queue
        # instead of computing a step that would lose the compare-and-set anyway.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._configs: dict[bytes, ResolvedConfig] = {}

    def lock(self, sid: str) -> asyncio.Lock:
        lock = self._locks.get(sid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sid] = lock
        return lock

    def resolve(self, config: OptimConfig) -> ResolvedConfig:
        key = orjson.dumps(config.model_dump(mode="json"))
        cfg = self._configs.get(key)
        if cfg is None:
            if len(self._configs) > 1024:
                self._configs.clear()
            cfg = self._configs[key] = config.resolve()
        return cfg

    async def compute(self, n: int, fn: Callable[..., T], *args: Any) -> T:
        """Large numpy work runs in a thread (numpy releases the GIL) so the event loop
        keeps answering health checks and small sessions."""
        if n >= self.settings.offload_elements:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def load(
        self, sid: str, slots: list[str] | None = None
    ) -> tuple[StoredSession, SessionMeta]:
        t0 = time.perf_counter()
        stored = await self.store.load(sid, slots)
        meta = SessionMeta.from_bytes(stored.meta)
        self.metrics.phase("load", time.perf_counter() - t0)
        return stored, meta

    async def step(
        self,
        sid: str,
        req: StepRequest,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> StepOutcome:
        if idempotency_key is not None:
            replay = await self._replay(sid, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        async with self.lock(sid):
            for _ in range(MAX_ATTEMPTS):
                stored, meta = await self.load(sid)
                if if_match is not None and stored.version != if_match:
                    raise PreconditionFailed(
                        f"If-Match {if_match} but the session is at version {stored.version}",
                        current_version=stored.version,
                    )
                staleness = self._staleness(meta, stored.version, req.base_version)
                cfg = self.resolve(meta.config)
                scale = 1.0
                if staleness and meta.options.staleness_lr == "inverse":
                    scale = 1.0 / (1 + staleness)
                state = meta.state(stored.slots)
                t0 = time.perf_counter()
                info: StepInfo = await self.compute(
                    meta.layout.total, _apply, cfg, meta, state, req.grads, scale
                )
                self.metrics.phase("compute", time.perf_counter() - t0)
                meta.step = info.step
                if req.loss is not None:
                    meta.last_loss = req.loss
                meta.updated_at = time.time()
                outcome = StepOutcome(
                    stored.version + 1, info.step, info.lr, info.grad_norm, staleness, info.updated
                )
                record = None
                if idempotency_key is not None:
                    body = orjson.dumps({**outcome.summary(), "updated": list(info.updated)})
                    record = IdempotencyRecord(idempotency_key, fingerprint, body)
                t0 = time.perf_counter()
                try:
                    outcome.version = await self.store.commit(
                        sid,
                        stored.version,
                        meta.to_bytes(),
                        state.slots,
                        record,
                        meta.options.ttl_s,
                    )
                except Conflict:
                    self.metrics.conflicts.inc()
                    if if_match is not None:
                        raise PreconditionFailed(
                            "the session changed while this step was computed",
                            current_version=if_match + 1,
                        ) from None
                    continue
                self.metrics.phase("commit", time.perf_counter() - t0)
                self.metrics.steps.inc()
                if staleness is not None:
                    self.metrics.staleness.observe(staleness)
                outcome.params = {s.name: state.view(PARAM, s.name) for s in meta.layout.specs}
                return outcome
        raise Conflict(
            f"the session changed {MAX_ATTEMPTS} times while this step was computed; retry",
            retry_after=1,
        )

    def _staleness(self, meta: SessionMeta, version: int, base: int | None) -> int | None:
        if base is None:
            return None
        if base > version:
            raise Conflict(
                f"base_version {base} is ahead of the session's version {version}",
                current_version=version,
            )
        staleness = version - base
        limit = meta.options.max_staleness
        if limit is not None and staleness > limit:
            self.metrics.stale.inc()
            raise StaleGradient(
                f"gradient computed on version {base} is {staleness} versions behind "
                f"(max_staleness {limit}); fetch the params and recompute",
                current_version=version,
                staleness=staleness,
            )
        return staleness

    async def _replay(self, sid: str, key: str, fingerprint: str) -> StepOutcome | None:
        record = await self.store.get_idempotency(sid, key)
        if record is None:
            return None
        if record.fingerprint != fingerprint:
            raise IdempotencyMismatch(
                f"Idempotency-Key {key!r} was used for another request body; use a new key"
            )
        d = orjson.loads(record.response)
        stored, meta = await self.load(sid)
        state = meta.state(stored.slots)
        return StepOutcome(
            d["version"],
            d["step"],
            d["lr"],
            d["grad_norm"],
            d["staleness"],
            tuple(d["updated"]),
            {s.name: state.view(PARAM, s.name) for s in meta.layout.specs},
            replayed=True,
        )


def _apply(
    cfg: ResolvedConfig,
    meta: SessionMeta,
    state: Any,
    grads: Mapping[str, np.ndarray],
    scale: float,
) -> StepInfo:
    flat, stepped = assemble_grads(meta.layout, grads, cfg.dtype)
    return run_step(cfg, state, flat, stepped, meta.step, scale)
