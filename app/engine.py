"""One step: load -> validate -> schedule/clip -> optim -> commit (DESIGN.md §1).

The engine owns the meaning of a session (its meta and slots); the store only
keeps bytes, and the API only translates HTTP. A step is a compare-and-set on the
session's version, so any number of API processes may serve one session: a lost
race reloads and recomputes, and nothing is ever applied twice or half.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson

from app import steplog
from app.core.auth import current_caller
from app.core.config import Settings
from app.metrics import Metrics
from app.optim import PARAM
from app.optim.step import contiguous_grads
from app.problems import (
    Conflict,
    IdempotencyMismatch,
    NotFound,
    PreconditionFailed,
    StaleGradient,
)
from app.session import SessionMeta
from app.store.base import IdempotencyRecord, Locked, SessionStore, StoredSession

T = TypeVar("T")
MAX_ATTEMPTS = 50
DEFAULT_WAIT_S = 30.0  # sync mode: how long a step waits for its round by default
INFLIGHT_TTL_S = 30.0  # an Idempotency-Key stays "in flight" at most this long after a crash
LOCK_TTL_MS = 10_000  # the advisory step lock outlives a dead holder by at most this
LOCK_WAIT_S = 10.0
CONTENDED_S = 5.0  # after a lost compare-and-set, use the lock for this long


@dataclass
class StepRequest:
    grads: dict[str, np.ndarray]
    base_version: int | None = None
    worker: str | None = None
    loss: float | None = None


class LostRace(Exception):
    """The commit's compare-and-set failed: another writer moved the version first."""


@dataclass
class BarrierPending:
    """A sync-mode step whose round did not complete within `wait` (HTTP 202)."""

    version: int
    have: int
    need: int


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
        self._contended: dict[str, float] = {}  # sid -> until (monotonic)
        self._background: set[asyncio.Future[None]] = set()
        store.replayer = self.replay

    async def replay(self, slots: dict[str, np.ndarray], entries: list[tuple[bytes, Any]]) -> None:
        """What the store calls to bring a state up to date from its step log."""
        n = sum(int(grad.size) for _, grad in entries)
        await self.compute(n, steplog.replay, slots, entries)

    def lock(self, sid: str) -> asyncio.Lock:
        lock = self._locks.get(sid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sid] = lock
        return lock

    async def compute(self, n: int, fn: Callable[..., T], *args: Any) -> T:
        """Large numpy work runs in a thread (numpy releases the GIL) so the event loop
        keeps answering health checks and small sessions."""
        if n >= self.settings.offload_elements:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def load(
        self,
        sid: str,
        slots: list[str] | None = None,
        *,
        take: bool = False,
        lock: tuple[str, int] | None = None,
        cached: bool = False,
    ) -> tuple[StoredSession, SessionMeta]:
        t0 = time.perf_counter()
        stored = await self.store.load(sid, slots, take=take, lock=lock, cached=cached)
        meta = SessionMeta.from_bytes(stored.meta)
        if not current_caller.get().may_see(meta.tenant):
            if lock is not None:
                await self.store.unlock(sid, lock[0])
            # another tenant's session: answered exactly like a missing one
            raise NotFound(f"session {sid} not found")
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
        wait: float = DEFAULT_WAIT_S,
    ) -> StepOutcome | BarrierPending:
        key = idempotency_key
        if key is not None:
            record = await self.store.claim_idempotency(sid, key, fingerprint, INFLIGHT_TTL_S)
            if record is not None:
                return await self._replay(sid, record, fingerprint)
        recorded = False
        try:
            async with self.lock(sid):
                out = await self._step_locked(sid, req, if_match, key, fingerprint)
            if isinstance(out, tuple):
                # sync rounds wait for the other workers: never while holding the lock
                from app.sync import sync_step  # sync imports the engine's types

                return await sync_step(self, sid, *out, req, if_match, wait)
            recorded = key is not None
            return out
        finally:
            if key is not None and not recorded:
                # the request failed (or sync mode, where the worker id dedups): free the key
                with contextlib.suppress(Exception):
                    await self.store.release_idempotency(sid, key, fingerprint)

    async def _step_locked(
        self, sid: str, req: StepRequest, if_match: int | None, key: str | None, fp: str
    ) -> StepOutcome | tuple[StoredSession, SessionMeta]:
        """An async step, under this process's lock for the session (so a step loads only
        after the previous one committed: it mutates what it loads, the store hands over
        its cache instead of copying). A sync-mode session is returned to the caller."""
        # Lock order: this process's asyncio lock, then the cross-process advisory lock.
        # Uncontended, a step is optimistic: it takes the state this process committed
        # last (no round trip), skips the advisory lock, and commits with "?" — a
        # compare-and-set that also fails while anyone holds the lock. After a lost race
        # the session is contended for CONTENDED_S: steps then take the lock in their load
        # script and release it in their commit, so an optimistic writer in another
        # process loses to them once and queues too (no step is computed twice in a row).
        contended = self._contended.get(sid, 0) > time.monotonic()
        token = secrets.token_hex(8) if contended else None
        held, attempts = False, 0
        deadline, pause = time.monotonic() + LOCK_WAIT_S, 0.001
        try:
            while attempts < MAX_ATTEMPTS:
                lock = (token, LOCK_TTL_MS) if token is not None and not held else None
                try:
                    stored, meta = await self.load(sid, take=True, lock=lock, cached=lock is None)
                    if stored.cached and not _usable(stored, meta, req, if_match):
                        stored, meta = await self.load(sid, take=True)
                except Locked:
                    # held elsewhere: wait for it, but never longer than LOCK_WAIT_S (the
                    # compare-and-set alone keeps the step correct; a dead holder's lock
                    # expires after LOCK_TTL_MS)
                    if time.monotonic() > deadline:
                        token = None
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.02)
                    continue
                held = held or lock is not None
                if meta.options.mode == "sync":
                    return stored, meta
                try:
                    unlock = token if held else "?"
                    out = await self._attempt(sid, req, stored, meta, if_match, key, fp, unlock)
                    held = False  # the commit released it
                    return out
                except LostRace:
                    attempts += 1
                    self.metrics.conflicts.inc()
                    if if_match is not None:
                        raise PreconditionFailed(
                            "the session changed while this step was computed",
                            current_version=if_match + 1,
                        ) from None
                    # Another process won the compare-and-set: take the advisory lock for
                    # the retries and for this session's next steps, so contended writers
                    # queue instead of computing steps that lose.
                    if len(self._contended) > 10_000:
                        self._contended.clear()
                    self._contended[sid] = time.monotonic() + CONTENDED_S
                    if token is None:
                        token = secrets.token_hex(8)
                        deadline = time.monotonic() + LOCK_WAIT_S
        finally:
            if held and token is not None:
                with contextlib.suppress(Exception):
                    await self.store.unlock(sid, token)
        raise Conflict(
            f"the session changed {MAX_ATTEMPTS} times while this step was computed; retry",
            retry_after=1,
        )

    async def _attempt(
        self,
        sid: str,
        req: StepRequest,
        stored: StoredSession,
        meta: SessionMeta,
        if_match: int | None,
        key: str | None,
        fingerprint: str,
        unlock: str | None = None,
    ) -> StepOutcome:
        if if_match is not None and stored.version != if_match:
            raise PreconditionFailed(
                f"If-Match {if_match} but the session is at version {stored.version}",
                current_version=stored.version,
            )
        staleness = self._staleness(meta, stored.version, req.base_version)
        cfg = meta.config.resolve()
        scale = 1.0
        if staleness and meta.options.staleness_lr == "inverse":
            scale = 1.0 / (1 + staleness)
        state = meta.state(stored.slots)
        nbytes = sum(a.nbytes for a in stored.slots.values())
        log = self.store.wants_log(sid, stored.version, nbytes)
        t0 = time.perf_counter()
        view = contiguous_grads(meta.layout, req.grads, cfg.dtype)
        # the log keeps a flat gradient as it is: start writing it now, while the step computes
        staging = None
        if log and view is not None:
            staging = asyncio.ensure_future(self.store.stage_log(sid, view))
        try:
            info, entry = await self.compute(
                meta.layout.total, steplog.step_grads, cfg, meta, state, req.grads, scale, log, view
            )
        except BaseException:
            if staging is not None:  # a refused step: its staged gradient goes now
                task = asyncio.ensure_future(self._discard(sid, staging))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            raise
        if staging is not None and entry is not None:
            with contextlib.suppress(Exception):  # else the commit sends the gradient itself
                entry.staged = await staging
        self.metrics.phase("compute", time.perf_counter() - t0)
        meta.step = info.step
        meta.last_lr, meta.last_grad_norm = info.lr, info.grad_norm
        if req.loss is not None:
            meta.last_loss = req.loss
        meta.updated_at = time.time()
        outcome = StepOutcome(
            stored.version + 1, info.step, info.lr, info.grad_norm, staleness, info.updated
        )
        record = None
        if key is not None:
            body = orjson.dumps({**outcome.summary(), "updated": list(info.updated)})
            record = IdempotencyRecord(key, fingerprint, body)
        t0 = time.perf_counter()
        try:
            outcome.version = await self.store.commit(
                sid,
                stored.version,
                meta.to_bytes(),
                state.slots,
                record,
                meta.options.ttl_s,
                entry,
                unlock,
            )
        except Conflict:
            raise LostRace() from None
        self.metrics.phase("commit", time.perf_counter() - t0)
        self.metrics.steps.inc()
        if staleness is not None:
            self.metrics.staleness.observe(staleness)
        outcome.params = {s.name: state.view(PARAM, s.name) for s in meta.layout.specs}
        return outcome

    async def _discard(self, sid: str, staging: asyncio.Future[Any]) -> None:
        with contextlib.suppress(Exception):
            await self.store.discard_log(sid, await staging)

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

    async def _replay(self, sid: str, record: IdempotencyRecord, fingerprint: str) -> StepOutcome:
        if record.fingerprint != fingerprint:
            raise IdempotencyMismatch(
                f"Idempotency-Key {record.key!r} was used for another request body; use a new key"
            )
        d = orjson.loads(record.response)
        stored, meta = await self.load(sid, [PARAM])
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


def _usable(
    stored: StoredSession, meta: SessionMeta, req: StepRequest, if_match: int | None
) -> bool:
    """Can an optimistic step go on with this cached state? It must hold every slot the
    optimizer needs, and a cache that may be stale must not decide a precondition: an
    If-Match or a base_version that differs from it is checked against the store."""
    needed = {PARAM, *meta.config.resolve().slot_names()}
    if not needed <= stored.slots.keys():
        return False
    if if_match is not None and if_match != stored.version:
        return False
    return req.base_version is None or req.base_version <= stored.version
