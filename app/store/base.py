"""The SessionStore protocol: what the engine needs from a place that keeps sessions.

A session in a store is three things:
- `version`: an int that grows by one per commit (the ETag); 0 at create.
- `meta`: an opaque JSON document (bytes) owned by the engine (config, layout,
  per-tensor step counts, last loss, ...). The store never parses it.
- `slots`: named flat 1-D numpy arrays ("param", "exp_avg", ...). The store keeps
  their dtype and length and returns arrays of the same dtype.

Ownership rules (they make a failed commit harmless):
- arrays returned by `load` belong to the caller, who may mutate them in place;
- arrays passed to `create`/`commit` belong to the store afterwards; the caller
  must not mutate them again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import numpy as np

from app.problems import Conflict, IdempotencyMismatch
from app.store.history import HistoryPage


@dataclass
class StoredSession:
    version: int
    meta: bytes
    slots: dict[str, np.ndarray] = field(default_factory=dict)
    cached: bool = False  # served from this process's cache, unverified (`load(cached=)`)
    # A store that keeps steps as a log returns the snapshot (every slot) and the steps
    # logged on top of it, oldest first, as (record, grad): the caller replays them onto
    # `slots` (with `take=False`, then hands the result back with `adopt`).
    log: list[tuple[bytes, np.ndarray]] = field(default_factory=list)
    incarnation: str | None = None  # store-defined: what `adopt` checks the result against


@dataclass
class IdempotencyRecord:
    """What a POST with an Idempotency-Key left behind (stored with its commit)."""

    key: str
    fingerprint: str  # hash of method, path and body: same key + other body -> 422
    response: bytes  # engine-defined encoding of the response to replay
    scope: str = ""  # the caller's tenant: keys of different tenants never meet
    owner: str = ""  # the claim (random per request) the commit must still hold


class ClaimLost(Conflict):
    """A commit carrying an idempotency record found the key no longer claimed by its
    request (its lease lapsed and a retry claimed it, or committed): nothing was written,
    and the write must not be retried — the step is the other request's to apply."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"a request with Idempotency-Key {key!r} is still in flight; retry shortly",
            in_flight=True,
            retry_after=1,
        )


class Locked(Exception):
    """`load(lock=...)`: another holder has the session's advisory lock; nothing loaded."""


@dataclass
class StepLog:
    """A step as its gradient (DESIGN §5 "gradient log"): a store may persist this instead
    of the slots a commit rewrites, and hand it back in `StoredSession.log` to be replayed."""

    record: bytes  # engine-defined: everything replaying the step needs besides `grad`
    grad: np.ndarray  # flat, in the state's dtype; the store's after the commit
    staged: Any = None  # what `stage_log` returned for `grad`, if it was staged


def refuse_in_flight(key: str, same_body: bool) -> NoReturn:
    """What a claim answers when a request under the same Idempotency-Key still runs
    (shared by every store, so they answer alike)."""
    if not same_body:
        raise IdempotencyMismatch(f"Idempotency-Key {key!r} is in use for another request body")
    raise Conflict(
        f"a request with Idempotency-Key {key!r} is still in flight; retry shortly",
        in_flight=True,
        retry_after=1,
    )


@dataclass
class Member:
    """A worker of a sync session (elastic rounds): when it was last heard from (epoch
    seconds, the API process's clock), rounds it contributed to, the last version it
    contributed to (None: none yet)."""

    last_seen: float
    rounds: int = 0
    last_version: int | None = None


@dataclass
class SessionSummary:
    id: str
    version: int
    meta: bytes


class StateStore(Protocol):
    """Persistence: sessions' versions, meta and slots, written by compare-and-set."""

    kind: str  # "memory" or "redis"

    def wants_log(self, sid: str, version: int, state_bytes: int) -> bool:
        """Whether a step on `version` of this session, with this much state, will be kept
        as a `StepLog` by `commit` (only then does the engine build one)."""

    async def stage_log(self, sid: str, grad: np.ndarray) -> Any:
        """Start writing a step's gradient before the step is computed (it overlaps the
        compute); the handle goes into `StepLog.staged`, or to `discard_log` when the
        step is refused (a commit that does not need it drops it itself)."""

    async def discard_log(self, sid: str, staged: Any) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be reached."""

    async def close(self) -> None: ...

    async def create(
        self,
        sid: str,
        meta: bytes,
        slots: Mapping[str, np.ndarray],
        labels: Mapping[str, str],
        ttl_s: int | None = None,
    ) -> None:
        """Store a new session at version 0; `Conflict` if `sid` exists."""

    async def load(
        self,
        sid: str,
        slots: Sequence[str] | None = None,
        *,
        take: bool = False,
        lock: tuple[str, int] | None = None,
        cached: bool = False,
    ) -> StoredSession:
        """Version, meta and the named slots (None: all of them); `NotFound` if absent.

        `take`: the caller is a step that will mutate the arrays and commit them; a store
        may hand over its cached arrays instead of copying them (and forget them).
        `lock` = (token, ttl_ms): take the advisory lock (`try_lock`) in the same atomic
        read; `Locked` if someone else holds it. `cached` (with `take`): a step whose commit
        compare-and-sets may take the state this process committed last without asking the
        store (no round trip; the result says `cached`, and the lock is not taken)."""

    def peek(self, sid: str) -> tuple[int, bytes] | None:
        """The (version, meta) this process last saw of the session, without a round trip
        and without taking anything; it may be behind the store. None: nothing known."""

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
        """Atomically: if version == expected_version, replace meta and the given slots
        (others untouched; a slot may be new) and the labels `list` filters on (None:
        unchanged), store `idempotency`, bump the version and return it. `Conflict`
        (with `current_version`) if the version moved on, `NotFound` if the session is
        gone. Never half-applied. On success the advisory lock held under the token
        `unlock` is released in the same write; `unlock="?"` (an optimistic step, loaded
        `cached`): `Conflict` while anyone holds the lock, so
        steps that skipped it yield to steps that queue.

        With `log` (a step: `slots` is then the whole new state) a store may keep the step
        as `log` instead of rewriting the slots. A store that keeps logs refuses a commit
        that names only some slots while a log is pending (the engine always passes every
        slot it loaded)."""

    async def delete(self, sid: str) -> bool:
        """Remove every key of the session; False if it did not exist."""

    async def list(
        self, cursor: str | None, limit: int, labels: Mapping[str, str] | None = None
    ) -> tuple[list[SessionSummary], str | None]:
        """A page of sessions (stable order by id) whose labels include `labels`,
        and the cursor of the next page (None at the end)."""

    def adopt(self, sid: str, stored: StoredSession) -> None:
        """The caller replayed `stored.log` onto `stored.slots` (a `take=False` load): a
        store may keep the result as that version's state (no replay on the next read)."""


class Coordination(Protocol):
    """Between API processes: idempotency, the advisory lock, sync rounds, tenants."""

    async def get_idempotency(
        self, sid: str, key: str, scope: str = ""
    ) -> IdempotencyRecord | None: ...

    async def claim_idempotency(
        self, sid: str, key: str, fingerprint: str, ttl_s: float, scope: str = "", owner: str = ""
    ) -> IdempotencyRecord | None:
        """Atomically: a completed record of this incarnation of the session is returned
        (replay); a request still in flight under this key raises `Conflict(in_flight=True)`
        (or `IdempotencyMismatch` if its body differs); otherwise claim the key for `owner`
        with a lease of `ttl_s` (renewed by `renew_idempotency`) and return None. Keys are
        per `scope` (tenant). The commit that carries the record (with the same `owner`)
        replaces the claim in the same atomic write, and refuses (`ClaimLost`) when the key
        holds another claim or a record by then."""

    async def renew_idempotency(
        self, sid: str, key: str, fingerprint: str, ttl_s: float, scope: str, owner: str
    ) -> bool:
        """Extend our claim's lease by `ttl_s`; False when it is no longer ours."""

    async def release_idempotency(
        self, sid: str, key: str, fingerprint: str, scope: str = "", owner: str = ""
    ) -> None:
        """Drop our claim after a request failed without committing."""

    async def try_lock(self, sid: str, token: str, ttl_ms: int) -> bool:
        """Advisory per-session lock (saves wasted compute under contention; the
        version compare-and-set, not the lock, is what keeps steps correct)."""

    async def unlock(self, sid: str, token: str) -> None: ...

    async def owner_claim(self, sid: str, me: str, ttl_ms: int) -> tuple[str, int]:
        """The session's owner lease (DESIGN §4 "Session owners"), atomically: free or held
        by `me` -> held by `me` for `ttl_ms` more; held by another -> unchanged. Returns
        (holder, milliseconds it holds it for); ("", 0) for a session that does not exist
        (no lease is taken). Claims and renews alike; a performance device only (commits
        stay compare-and-set on the version)."""

    async def owner_release(self, sid: str, me: str) -> None:
        """Drop the lease if `me` holds it (a process stopping hands its sessions over)."""

    async def barrier_add(
        self, sid: str, version: int, worker: str, blob: bytes, ttl_s: int
    ) -> tuple[int, bool]:
        """Add a worker's gradient to the sync round on top of `version` unless that worker
        already sent one, and record the worker as heard from now (as `member_touch`, with
        `contributed=version` when it was new), atomically. Returns (distinct workers in
        the round, whether this one was new). `Conflict` (with `current_version`) and
        nothing written when the session is no longer at `version`: that round is closed,
        and a gradient added to it now would be answered as if it had counted; `NotFound`
        when the session is gone."""

    async def barrier_get(self, sid: str, version: int) -> dict[str, bytes]: ...

    async def barrier_count(self, sid: str, version: int) -> int:
        """How many workers the round holds (without moving their gradients)."""

    async def barrier_clear(self, sid: str, version: int) -> None: ...

    async def barrier_workers(self, sid: str, version: int) -> tuple[list[str], float | None]:
        """Who contributed to the round (not their gradients), and when its first
        contribution arrived (epoch seconds; None: no contribution yet)."""

    async def member_touch(
        self, sid: str, worker: str, now: float, contributed: int | None, ttl_s: int
    ) -> None:
        """The worker was heard from at `now`; `contributed`: to the round on that version."""

    async def member_leave(self, sid: str, worker: str) -> bool: ...

    async def announce(self, sid: str, version: int) -> None:
        """Tell every API process that the session reached `version` (a closed sync round).
        Best effort: listeners may miss one, so waiters also re-read the version."""

    def announcements(self) -> AsyncIterator[tuple[str, int]]:
        """Every process's announcements from now on, as (sid, version), until the
        subscription breaks (`StoreUnavailable`; subscribe again)."""

    async def members(self, sid: str) -> dict[str, Member]: ...

    # --- history (issue #19; `store/history.py`) ---

    async def history_append(
        self, sid: str, version: int, point: bytes, cap: int, block: int
    ) -> int:
        """Keep `point` (engine-defined bytes) as the session's history at `version`: the
        last `cap` points, plus a tail downsampled to at most `cap`. Nothing happens for a
        session that does not exist; the history goes with the session (delete, TTL).
        Returns the bytes to charge the session's tenant now: the growth, in whole
        `block`s, of the history's charge (a high-water mark of the bytes it holds)."""

    async def history_charged(self, sid: str) -> int:
        """What the session's history was charged so far (0 for no history)."""

    async def history_read(self, sid: str, since: int, limit: int) -> HistoryPage:
        """At most `limit` points with a version above `since`, oldest first: the tail's
        points before the recent window, then the recent ones."""

    # --- tenants (DESIGN §6) ---

    async def quota_add(
        self,
        tenant: str,
        sessions: int,
        nbytes: int,
        max_sessions: int | None,
        max_bytes: int | None,
        pending: int = 0,
    ) -> bool:
        """Atomically add to a tenant's usage (sessions, state bytes) unless an increase
        would pass a limit (then nothing changes and False). Decreases always apply.
        `pending` +1 marks a write charged before its session changes, -1 its end (landed
        or failed): recounts wait for those. Every applied change bumps a generation."""

    async def quota_gen(self, tenant: str, stale_ms: int) -> int | None:
        """The usage's generation, where a recount may start; None while a charged write
        is pending (unless the pending count has not changed for `stale_ms`: its writer
        died)."""

    async def quota_recount(self, tenant: str, gen: int, sessions: int, nbytes: int) -> bool:
        """Replace the usage with a recount of the live sessions that began at `gen`; False
        (nothing changed) if the usage changed since."""

    async def rate_take(self, tenant: str, rate: float, burst: float) -> float:
        """Take one token from the tenant's bucket: 0.0 if granted, else seconds to wait.
        Shared by every API process (one bucket per tenant in the store)."""


class SessionStore(StateStore, Coordination, Protocol):
    """Implemented by `memory.MemoryStore` and `redis.RedisStore`; both pass the same tests."""
