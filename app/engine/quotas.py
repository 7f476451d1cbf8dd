"""Tenants' quotas: every change to a session's size is charged or refunded with it.

The counters (`quota_add`, atomic in the store) are per tenant, while a session's keys
live in the session's own cluster slot, so the two cannot change in one atomic write on
Redis Cluster. The rule instead: an increase is charged *before* the commit that makes it
(refused with 429 before anything is written), a decrease is refunded only *after* the
commit that makes it succeeded, and a charge whose commit is lost is refunded. A crash
between the two leaves the counter too high, never too low: a tenant can never hold more
than its quota. A write body that runs again after a lost compare-and-set recomputes its
charge from the state it now sees (`Charge.set` refunds the previous attempt's first).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from app.core.auth import Caller
from app.engine.meta import SessionMeta
from app.engine.txn import Transactions
from app.problems import RateLimited

T = TypeVar("T")


def state_bytes(meta: SessionMeta) -> int:
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


async def charge(
    txn: Transactions, caller: Caller, tenant: str | None, sessions: int, nbytes: int
) -> None:
    """Add to `tenant`'s usage, 429 when an increase would pass the limits. The limits
    are the caller's when the caller is that tenant; an admin acting on another tenant's
    session is counted against it but not refused (the engine knows only the caller's
    limits). Counted even for a tenant without limits, so limits added later are right."""
    if tenant is None or (sessions == 0 and nbytes == 0):
        return
    lim = caller.limits if caller.tenant == tenant else None
    max_s = lim.max_sessions if lim is not None else None
    max_b = lim.max_state_bytes if lim is not None else None
    if not await txn.store.quota_add(tenant, sessions, nbytes, max_s, max_b):
        raise _refused(tenant, caller)


async def reserve(txn: Transactions, caller: Caller, total: int, nbytes: int) -> None:
    """Count a new session against the caller's quotas (429 when over), atomically in the
    store so racing creates cannot pass the limit."""
    check_max_params(caller, total)
    await charge(txn, caller, caller.tenant, 1, nbytes)


async def release(txn: Transactions, tenant: str | None, nbytes: int) -> None:
    await charge(txn, Caller(None), tenant, -1, -nbytes)


class Charge:
    """The quota side of one write on an existing session (PATCH, PUT state), whose owner
    never changes: `set` (in the body, before it returns its commit) charges the growth
    the body is about to commit, after refunding the previous attempt's charge; `settle`
    (the commit succeeded) refunds a shrink; `cancel` (the write failed) refunds a charge."""

    def __init__(self, txn: Transactions, caller: Caller) -> None:
        self.txn, self.caller = txn, caller
        self._tenant: str | None = None
        self._delta = 0  # > 0: charged already; < 0: to refund once committed

    async def set(self, tenant: str | None, old_bytes: int, new_bytes: int) -> None:
        await self.cancel()
        self._tenant, delta = tenant, new_bytes - old_bytes
        if delta > 0:
            await charge(self.txn, self.caller, self._tenant, 0, delta)
        self._delta = delta

    async def settle(self) -> None:
        if self._delta < 0:
            await charge(self.txn, self.caller, self._tenant, 0, self._delta)
        self._delta = 0

    async def cancel(self) -> None:
        if self._delta > 0:
            await charge(self.txn, self.caller, self._tenant, 0, -self._delta)
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
