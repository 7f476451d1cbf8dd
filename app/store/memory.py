"""The embedded store: one process, plain dicts, nothing survives a restart.

Every method runs without awaiting, so on one event loop each call is atomic:
a commit checks the version and writes in the same uninterrupted stretch of
code, which is all the compare-and-set the protocol asks for. TTLs are honoured
lazily (an expired session is dropped when next touched or listed).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.problems import Conflict, NotFound
from app.store import keys
from app.store.base import (
    ClaimLost,
    IdempotencyRecord,
    Locked,
    Member,
    SessionSummary,
    StepLog,
    StoredSession,
)
from app.store.history import History
from app.store.memory_idem import MemoryIdempotency
from app.store.memory_owners import MemoryOwners
from app.store.memory_rounds import MemoryRounds
from app.store.memory_tenants import MemoryTenants


@dataclass
class _Session:
    version: int
    meta: bytes
    slots: dict[str, np.ndarray]
    labels: dict[str, str]
    expires_at: float | None
    # keyed by (tenant, Idempotency-Key): one tenant's keys never meet another's
    idempotency: dict[tuple[str, str], tuple[IdempotencyRecord, float]] = field(
        default_factory=dict
    )
    inflight: dict[tuple[str, str], tuple[str, float, str]] = field(
        default_factory=dict
    )  # (tenant, key) -> (fingerprint, lease until, owner)
    lock: tuple[str, float] | None = None
    barriers: dict[int, dict[str, bytes]] = field(default_factory=dict)
    opened: dict[int, float] = field(default_factory=dict)  # round -> first contribution
    members: dict[str, Member] = field(default_factory=dict)
    history: History = field(default_factory=History)  # goes with the session


def _own(slots: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Take the caller's arrays (they are ours now) as flat native-endian arrays, copying
    only when the layout demands it; the same dtype rules as the Redis store."""
    out: dict[str, np.ndarray] = {}
    for name, arr in slots.items():
        a = np.ravel(arr)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"unsupported slot dtype {a.dtype}")
        out[keys.check_slot(name)] = a.astype(a.dtype.newbyteorder("="), copy=False)
    return out


class MemoryStore(MemoryIdempotency, MemoryTenants, MemoryRounds, MemoryOwners):
    kind = "memory"

    def wants_log(self, sid: str, version: int, state_bytes: int) -> bool:
        return False

    async def stage_log(self, sid: str, grad: np.ndarray) -> None:
        raise NotImplementedError("the memory store keeps no log")

    async def discard_log(self, sid: str, staged: object) -> None:
        return None

    def adopt(self, sid: str, stored: StoredSession) -> None:
        return None  # never handed out a log

    def __init__(
        self, *, idempotency_ttl_s: int = 86400, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idempotency_ttl_s = idempotency_ttl_s
        self.clock = clock  # injectable so tests can expire sessions without sleeping
        self._sessions: dict[str, _Session] = {}
        self._order: list[str] = []  # sorted sids, for stable cursor paging
        self._listeners: list[asyncio.Queue[tuple[str, int]]] = []  # announcements()
        MemoryTenants.__init__(self, clock)
        MemoryOwners.__init__(self)

    def _get(self, sid: str) -> _Session:
        keys.check_sid(sid)
        sess = self._sessions.get(sid)
        if sess is not None and sess.expires_at is not None and sess.expires_at <= self.clock():
            self._drop(sid)
            sess = None
        if sess is None:
            raise NotFound(f"session {sid} not found")
        return sess

    def _find(self, sid: str) -> _Session | None:
        return self._sessions.get(sid)

    def _deadline(self, ttl_s: int | None) -> float | None:
        return None if not ttl_s else self.clock() + ttl_s

    def _drop(self, sid: str) -> None:
        del self._sessions[sid]
        self._owners.pop(sid, None)  # the lease goes with the session, as on Redis
        i = bisect.bisect_left(self._order, sid)
        if i < len(self._order) and self._order[i] == sid:
            del self._order[i]

    async def owner_claim(self, sid: str, me: str, ttl_ms: int) -> tuple[str, int]:
        if self._get_or_none(sid) is None:
            return "", 0  # no session, no owner (as owner.lua)
        return await MemoryOwners.owner_claim(self, sid, me, ttl_ms)

    def _get_or_none(self, sid: str) -> _Session | None:
        try:
            return self._get(sid)  # (drops an expired session)
        except NotFound:
            return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(
        self,
        sid: str,
        meta: bytes,
        slots: Mapping[str, np.ndarray],
        labels: Mapping[str, str],
        ttl_s: int | None = None,
    ) -> None:
        try:
            self._get(keys.check_new_sid(sid))
        except NotFound:
            pass
        else:
            raise Conflict(f"session {sid} already exists")
        self._sessions[sid] = _Session(
            0, bytes(meta), _own(slots), dict(labels), self._deadline(ttl_s)
        )
        bisect.insort(self._order, sid)

    def peek(self, sid: str) -> tuple[int, bytes] | None:
        sess = self._sessions.get(sid)  # one process: what it holds is the truth
        return None if sess is None else (sess.version, sess.meta)

    async def load(
        self,
        sid: str,
        slots: Sequence[str] | None = None,
        *,
        take: bool = False,
        lock: tuple[str, int] | None = None,
        cached: bool = False,
    ) -> StoredSession:
        # `take` changes nothing here: these arrays are the committed state, so a caller
        # that mutates always gets copies
        sess = self._get(sid)
        if lock is not None and not await self.try_lock(sid, *lock):
            raise Locked(sid)
        names = list(sess.slots) if slots is None else [s for s in slots if s in sess.slots]
        return StoredSession(sess.version, sess.meta, {n: sess.slots[n].copy() for n in names})

    async def commit(
        self,
        sid: str,
        expected_version: int,
        meta: bytes,
        slots: Mapping[str, np.ndarray],
        idempotency: IdempotencyRecord | None = None,
        ttl_s: int | None = None,
        log: StepLog | None = None,
        unlock: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        sess = self._get(sid)
        if unlock == "?" and sess.lock is not None and sess.lock[1] > self.clock():
            raise Conflict(f"session {sid} is locked by a step", current_version=sess.version)
        if sess.version != expected_version:
            raise Conflict(
                f"session {sid} is at version {sess.version}, not {expected_version}",
                current_version=sess.version,
            )
        if idempotency is not None and not self._claim_held(sess, idempotency):
            raise ClaimLost(idempotency.key)
        new_slots = _own(slots)  # validates before anything changes
        sess.slots.update(new_slots)
        sess.meta = bytes(meta)
        if labels is not None:
            sess.labels = dict(labels)
        sess.version += 1
        if ttl_s:
            sess.expires_at = self._deadline(ttl_s)
        if idempotency is not None:
            until = self.clock() + self.idempotency_ttl_s
            at = (idempotency.scope, idempotency.key)
            sess.idempotency[at] = (idempotency, until)
            sess.inflight.pop(at, None)
        if unlock is not None and unlock != "?":
            await self.unlock(sid, unlock)
        return sess.version

    async def delete(self, sid: str) -> bool:
        """False for an absent session, malformed ids included (they cannot exist)."""
        try:
            self._get(sid)
        except NotFound:
            return False
        self._drop(sid)
        return True

    async def list(
        self, cursor: str | None, limit: int, labels: Mapping[str, str] | None = None
    ) -> tuple[list[SessionSummary], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = keys.decode_cursor(cursor)
        want = dict(labels or {})
        start = 0 if after is None else bisect.bisect_right(self._order, after)
        page: list[SessionSummary] = []
        i = start
        while i < len(self._order) and len(page) < limit:
            sid = self._order[i]
            try:
                sess = self._get(sid)
            except NotFound:  # expired: _get removed it from _order, do not advance
                continue
            i += 1
            if all(sess.labels.get(k) == v for k, v in want.items()):
                page.append(SessionSummary(sid, sess.version, sess.meta))
        more = i < len(self._order)
        return page, (keys.encode_cursor(self._order[i - 1]) if more else None)

    async def try_lock(self, sid: str, token: str, ttl_ms: int) -> bool:
        sess = self._get(sid)
        now = self.clock()
        if sess.lock is not None and sess.lock[1] > now and sess.lock[0] != token:
            return False
        sess.lock = (token, now + ttl_ms / 1000)
        return True

    async def unlock(self, sid: str, token: str) -> None:
        sess = self._sessions.get(sid)
        if sess is not None and sess.lock is not None and sess.lock[0] == token:
            sess.lock = None
