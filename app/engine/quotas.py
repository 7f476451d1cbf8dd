"""Tenants' quotas: every change to a session's size is charged or refunded with it.

The counters (`quota_add`, atomic in the store) are per tenant, while a session's keys
live in the session's own cluster slot, so the two cannot change in one atomic write on
Redis Cluster. The rule instead: an increase is charged *before* the commit that makes it
(refused with 429 before anything is written), a decrease is refunded only *after* the
commit that makes it succeeded, and a charge whose commit is lost is refunded. A crash
between the two leaves the counter too high, never too low: a tenant can never hold more
than its quota. A write body that runs again after a lost compare-and-set recomputes its
charge from the state it now sees (`Charge.set` refunds the previous attempt's first).

A session's history (engine/history.py) is charged as it grows, in blocks, without a
limit check, and given back with the session; a recount adds each session's charge.

Sessions that expire (TTL) are not subtracted when they go (nothing tells the API when
Redis expires a key, and counting on keyspace notifications would lose events). Instead
the counters are recounted from the live sessions when they would refuse an increase:
`recount` lists the tenant's sessions (expired ones are gone from the list) and replaces
the counters, unless they changed meanwhile (a generation in the store) or a charged write
is still in flight (a `pending` count in the store, which a listing could miss); then the
refusal stands and a later request recounts again. A recount costs a listing, so a process
recounts a tenant at most once per `RECOUNT_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable
from typing import TypeVar

from app.core.auth import TENANT_LABEL, Caller
from app.engine.meta import SessionMeta
from app.engine.txn import Transactions
from app.problems import RateLimited

T = TypeVar("T")
RECOUNT_EVERY_S = 1.0
PENDING_STALE_MS = 60_000  # a pending charge unchanged this long: its writer died
_last_recount: weakref.WeakKeyDictionary[Transactions, dict[str, float]] = (
    weakref.WeakKeyDictionary()
)


def state_bytes(meta: SessionMeta) -> int:
    if (meta.options.shards or 1) > 1:
        return 0  # a sharded session's state is its shard sessions' (DESIGN §3)
    cfg = meta.config.resolve()
    return meta.layout.total * cfg.dtype.itemsize * (1 + len(cfg.slot_names()))


def check_max_params(caller: Caller, total: int) -> None:
    limit = caller.limits.max_params
    if caller.tenant is not None and limit is not None and total > limit:
        raise RateLimited(
            f"tenant {caller.tenant!r} may have at most {limit} parameters per session; "
            f"this one has {total}",
            retry_after=3600,
        )


def _refused(tenant: str, caller: Caller) -> RateLimited:
    lim = caller.limits
    return RateLimited(
        f"tenant {tenant!r} is at its quota (limits: {lim.max_sessions} sessions, "
        f"{lim.max_state_bytes} state bytes): delete sessions or ask for a larger quota",
        retry_after=60,
    )


async def recount(txn: Transactions, tenant: str) -> bool:
    """Replace `tenant`'s counters with its live sessions; False if that was not safe now
    (or this process recounted the tenant less than `RECOUNT_EVERY_S` ago)."""
    seen = _last_recount.setdefault(txn, {})
    now = time.monotonic()
    if now - seen.get(tenant, -RECOUNT_EVERY_S) < RECOUNT_EVERY_S:
        return False
    if len(seen) > 10_000:
        seen.clear()
    seen[tenant] = now
    gen = await txn.store.quota_gen(tenant, PENDING_STALE_MS)
    if gen is None:
        return False
    sessions = nbytes = 0
    cursor: str | None = None
    while True:
        page, cursor = await txn.store.list(cursor, 1000, {TENANT_LABEL: tenant})
        charged = await asyncio.gather(*(txn.store.history_charged(s.id) for s in page))
        for summary, history in zip(page, charged, strict=True):
            sessions += 1
            nbytes += state_bytes(SessionMeta.from_bytes(summary.meta)) + history
        if cursor is None:
            break
    return await txn.store.quota_recount(tenant, gen, sessions, nbytes)


async def charge(
    txn: Transactions,
    caller: Caller,
    tenant: str | None,
    sessions: int,
    nbytes: int,
    pending: int = 0,
) -> None:
    """Add to `tenant`'s usage, 429 when an increase would pass the limits. The limits
    are the caller's when the caller is that tenant; an admin acting on another tenant's
    session is counted against it but not refused (the engine knows only the caller's
    limits). Counted even for a tenant without limits, so limits added later are right."""
    if tenant is None or (sessions == 0 and nbytes == 0 and pending == 0):
        return
    lim = caller.limits if caller.tenant == tenant else None
    max_s = lim.max_sessions if lim is not None else None
    max_b = lim.max_state_bytes if lim is not None else None
    if await txn.store.quota_add(tenant, sessions, nbytes, max_s, max_b, pending):
        return
    # refused: the counters may still hold sessions that expired since
    if not await recount(txn, tenant) or not await txn.store.quota_add(
        tenant, sessions, nbytes, max_s, max_b, pending
    ):
        raise _refused(tenant, caller)


async def reserve(txn: Transactions, caller: Caller, total: int, nbytes: int) -> None:
    """Count a new session against the caller's quotas (429 when over), atomically in the
    store so racing creates cannot pass the limit."""
    check_max_params(caller, total)
    await charge(txn, caller, caller.tenant, 1, nbytes, pending=1)


async def created(txn: Transactions, tenant: str | None, nbytes: int, ok: bool) -> None:
    """After the create that `reserve` charged for: it landed (`ok`), or it failed and
    its share goes back; either way it is no longer pending."""
    await charge(txn, Caller(None), tenant, 0 if ok else -1, 0 if ok else -nbytes, pending=-1)


async def release(
    txn: Transactions, tenant: str | None, nbytes: int, delete: Awaitable[bool]
) -> bool:
    """Run `delete` (True: it removed the session) and give the session's share back after
    it; pending meanwhile, so a recount cannot count the session gone and then see the
    share given back a second time."""
    await charge(txn, Caller(None), tenant, 0, 0, pending=1)
    gone = False
    try:
        gone = await delete
    finally:
        await charge(txn, Caller(None), tenant, -1 if gone else 0, -nbytes if gone else 0, -1)
    return gone


class Charge:
    """The quota side of one write on an existing session (PATCH, PUT state), whose owner
    never changes: `set` (in the body, before it returns its commit) charges the growth
    the body is about to commit, after refunding the previous attempt's charge; `settle`
    (the commit succeeded) refunds a shrink; `cancel` (the write failed) refunds a charge.
    A size change is `pending` from `set` to `settle`/`cancel`."""

    def __init__(self, txn: Transactions, caller: Caller) -> None:
        self.txn, self.caller = txn, caller
        self._tenant: str | None = None
        self._delta = 0  # > 0: charged already; < 0: to refund once committed

    async def set(self, tenant: str | None, old_bytes: int, new_bytes: int) -> None:
        await self.cancel()
        self._tenant, delta = tenant, new_bytes - old_bytes
        if delta != 0:  # pending either way: a recount must not run across the commit
            await charge(self.txn, self.caller, tenant, 0, max(delta, 0), pending=1)
        self._delta = delta

    async def settle(self) -> None:
        if self._delta != 0:
            await charge(self.txn, self.caller, self._tenant, 0, min(self._delta, 0), -1)
        self._delta = 0

    async def cancel(self) -> None:
        if self._delta != 0:
            await charge(self.txn, self.caller, self._tenant, 0, -max(self._delta, 0), -1)
        self._delta = 0

    async def run(self, write: Awaitable[T]) -> T:
        """Await `write` (whose body calls `set`), then settle, or cancel if it failed."""
        try:
            out = await write
        except BaseException:
            await self.cancel()
            raise
        await self.settle()
        return out
