"""The one write transaction every change to a session goes through, and the reads.

`Transactions.write(sid, caller, body)`: take this process's lock for the session, load
it (checking that the caller may see it and any If-Match), let `body` compute the new
state, and commit it with a compare-and-set on the version. Steps, sync rounds, PATCH,
PUT params and PUT state all use it, so all of them share ONE conflict policy:

- If-Match given and the version differs (at load, or because another writer committed
  while the body ran): 412 `precondition-failed` with the current version.
- Otherwise a lost compare-and-set reloads and runs the body again, at most
  `MAX_ATTEMPTS` times, then 409 `conflict` with `Retry-After` (the client retries).

Lock order: this process's asyncio lock, then the store's advisory lock. Uncontended, a
write skips the advisory lock; after a lost race the session is "contended" for
`CONTENDED_S` and writes take the advisory lock in their load and release it in their
commit, so writers in different processes queue instead of computing states that lose.
The lock is never needed for correctness (a dead holder's lock expires after
`LOCK_TTL_MS`, and a waiter stops waiting after `LOCK_WAIT_S`).

Reads replay what a store with a step log hands back (`StoredSession.log`) with the
step's own code (`execute.replay`); the store never calls back into the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from app.core.auth import Caller
from app.core.config import Settings
from app.engine import execute
from app.engine.meta import SessionMeta
from app.metrics import Metrics
from app.problems import Conflict, NotFound, PreconditionFailed
from app.store.base import ClaimLost, IdempotencyRecord, Locked, SessionStore, StepLog

T = TypeVar("T")
MAX_ATTEMPTS = 50
LOCK_TTL_MS = 10_000  # the advisory lock outlives a dead holder by at most this
LOCK_WAIT_S = 10.0
CONTENDED_S = 5.0  # after a lost compare-and-set, use the advisory lock for this long


class Hidden(NotFound):
    """Another tenant's session: answered exactly like a missing one (404), but the engine
    can tell the two apart where it must (restoring a checkpoint under an id)."""


@dataclass
class Loaded:
    """A session as a transaction body (or a reader) sees it. With `take`, the slots
    belong to the body, which may mutate them and hand them to its `Commit`."""

    version: int
    meta: SessionMeta
    slots: dict[str, np.ndarray]
    cached: bool = False  # this process's own last commit, not checked with the store


@dataclass
class Commit(Generic[T]):
    """What a body wants committed on top of the version it loaded."""

    meta: SessionMeta
    slots: Mapping[str, np.ndarray]
    result: T
    record: IdempotencyRecord | None = None
    log: StepLog | None = None


@dataclass
class Skip(Generic[T]):
    """A body that decided not to write (a round someone else closed, a sync session)."""

    result: T


Body = Callable[[Loaded], Awaitable[Commit[T] | Skip[T]]]


def check_if_match(if_match: int | None, version: int) -> None:
    if if_match is not None and if_match != version:
        raise PreconditionFailed(
            f"If-Match {if_match} but the session is at version {version}",
            current_version=version,
        )


class Transactions:
    def __init__(self, store: SessionStore, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # One in-process lock per session: concurrent requests in this process queue
        # instead of computing a state that would lose the compare-and-set anyway.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._contended: dict[str, float] = {}  # sid -> until (monotonic)
        # peek(): the meta last parsed per session (shared and read-only: never mutate it)
        self._metas: dict[str, tuple[bytes, SessionMeta]] = {}

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

    async def read(self, sid: str, caller: Caller, slots: Sequence[str] | None = None) -> Loaded:
        """The session as it is now (copies: the reader may keep them); 404 for a session
        the caller may not see."""
        return await self._load(sid, caller, slots)

    def peek(self, sid: str, caller: Caller) -> Loaded | None:
        """The session as this process last saw it (version and meta, no slots), without a
        round trip; it may be behind the store, so only a write that the store checks
        against the version may act on it. None: nothing known, or not the caller's."""
        got = self.store.peek(sid)
        if got is None:
            return None
        version, raw = got
        hit = self._metas.get(sid)
        if hit is None or hit[0] != raw:
            if len(self._metas) >= 4096:
                self._metas.clear()
            hit = self._metas[sid] = (raw, SessionMeta.from_bytes(raw))
        meta = hit[1]
        return Loaded(version, meta, {}, cached=True) if caller.may_see(meta.tenant) else None

    async def version(self, sid: str) -> int:
        """Just the version (polls; call `read` once first for the visibility check)."""
        return (await self.store.load(sid, [])).version

    async def write(
        self,
        sid: str,
        caller: Caller,
        body: Body[T],
        *,
        if_match: int | None = None,
        slots: Sequence[str] | None = None,
        optimistic: bool = False,
        usable: Callable[[Loaded], bool] | None = None,
    ) -> tuple[int, T]:
        """Run `body` on the session and commit what it returns: (new version, result),
        or (loaded version, result) when it skips. `slots`: what the body needs loaded
        (None: all). `optimistic` (steps): start from this process's last commit without
        asking the store, when `usable` accepts it; its commit then yields to writers
        that hold the advisory lock."""
        async with self.lock(sid):
            return await self._write_locked(sid, caller, body, if_match, slots, optimistic, usable)

    async def _write_locked(
        self,
        sid: str,
        caller: Caller,
        body: Body[T],
        if_match: int | None,
        slots: Sequence[str] | None,
        optimistic: bool,
        usable: Callable[[Loaded], bool] | None,
    ) -> tuple[int, T]:
        contended = self._contended.get(sid, 0) > time.monotonic()
        token = secrets.token_hex(8) if contended else None
        held, attempts = False, 0
        deadline, pause = time.monotonic() + LOCK_WAIT_S, 0.001
        try:
            while attempts < MAX_ATTEMPTS:
                lock = (token, LOCK_TTL_MS) if token is not None and not held else None
                try:
                    cur = await self._load(
                        sid, caller, slots, take=True, lock=lock, cached=optimistic and not lock
                    )
                    if cur.cached and not _cache_decides(cur, if_match, usable):
                        cur = await self._load(sid, caller, slots, take=True)
                except Locked:
                    # held elsewhere: wait for it, but never longer than LOCK_WAIT_S
                    if time.monotonic() > deadline:
                        token = None
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.02)
                    continue
                held = held or lock is not None
                check_if_match(if_match, cur.version)
                out = await body(cur)
                if isinstance(out, Skip):
                    return cur.version, out.result
                unlock = token if held else ("?" if optimistic else None)
                t0 = time.perf_counter()
                try:
                    version = await self.store.commit(
                        sid,
                        cur.version,
                        out.meta.to_bytes(),
                        out.slots,
                        out.record,
                        out.meta.options.ttl_s,
                        out.log,
                        unlock,
                        # the list index changes with the session (a step never relabels)
                        None if out.log is not None else out.meta.store_labels(),
                    )
                except ClaimLost:
                    raise  # the Idempotency-Key is another request's now: it applies the step
                except Conflict as exc:
                    attempts += 1
                    self.metrics.conflicts.inc()
                    if if_match is not None:
                        now = exc.extra.get("current_version", if_match + 1)
                        raise PreconditionFailed(
                            "the session changed while this write was computed",
                            current_version=now,
                        ) from None
                    self._contend(sid)
                    if token is None:
                        token = secrets.token_hex(8)
                        deadline = time.monotonic() + LOCK_WAIT_S
                    continue
                held = False  # the commit released it
                self.metrics.phase("commit", time.perf_counter() - t0)
                return version, out.result
        finally:
            if held and token is not None:
                with contextlib.suppress(Exception):
                    await self.store.unlock(sid, token)
        raise Conflict(
            f"the session changed {MAX_ATTEMPTS} times while this write was computed; retry",
            retry_after=1,
        )

    def _contend(self, sid: str) -> None:
        if len(self._contended) > 10_000:
            self._contended.clear()
        self._contended[sid] = time.monotonic() + CONTENDED_S

    async def _load(
        self,
        sid: str,
        caller: Caller,
        slots: Sequence[str] | None,
        *,
        take: bool = False,
        lock: tuple[str, int] | None = None,
        cached: bool = False,
    ) -> Loaded:
        t0 = time.perf_counter()
        stored = await self.store.load(sid, slots, take=take, lock=lock, cached=cached)
        meta = SessionMeta.from_bytes(stored.meta)
        if not caller.may_see(meta.tenant):
            if lock is not None:
                await self.store.unlock(sid, lock[0])
            raise Hidden(f"session {sid} not found")
        if stored.log:
            # a step log on top of the snapshot the store returned: replay it exactly
            n = sum(int(grad.size) for _, grad in stored.log)
            await self.compute(n, execute.replay, stored.slots, stored.log)
            if not take:
                self.store.adopt(sid, stored)
        self.metrics.phase("load", time.perf_counter() - t0)
        return Loaded(stored.version, meta, stored.slots, stored.cached)


def _cache_decides(
    cur: Loaded, if_match: int | None, usable: Callable[[Loaded], bool] | None
) -> bool:
    """A cached state may be stale: it must not decide a precondition (an If-Match that
    differs from it is checked against the store), and the body must accept it."""
    if if_match is not None and if_match != cur.version:
        return False
    return usable is None or usable(cur)
