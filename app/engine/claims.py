"""Idempotency claims (DESIGN §3, §8 "Many workers"): a keyed request claims its key in
the store before it runs, keeps the claim alive while it runs, and its commit carries the
record that replaces the claim.

A claim is a short lease (`LEASE_S`), renewed every `RENEW_S` by a timer of the request
that holds it, so the key of a request whose process died (kill -9) or whose store went
away (a Redis Cluster master failing over) is free again within a lease, not after a long
fixed TTL. A request that is alive but stalled longer than a lease can lose its claim to a
retry; that never applies a step twice, because the commit checks in the same atomic
write that the key still holds this request's own claim (`owner`, random per request) and
refuses otherwise (`ClaimLost`, 409 in flight: the retry applies it).

Keys and records are per tenant (`scope`): another tenant's request under the same key on
the same id meets nothing of ours, and sees what a never-used key would give it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from app.core.auth import Caller
from app.store.base import IdempotencyRecord, SessionStore

LEASE_S = 1.5  # a dead request's Idempotency-Key is free again at most this long after
RENEW_S = 0.5  # renewed this often while the request runs (3 chances per lease)


class Claim:
    """One request's claim on an Idempotency-Key; `record(response)` is what its commit
    carries. Renewal runs only once the request has run for `RENEW_S` (a timer, not a
    task per request: most steps finish long before)."""

    def __init__(self, store: SessionStore, sid: str, caller: Caller, key: str, fp: str) -> None:
        self.store, self.sid, self.key, self.fingerprint = store, sid, key, fp
        self.scope = caller.tenant or ""
        self.owner = secrets.token_hex(8)
        self._timer: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def take(self) -> IdempotencyRecord | None:
        """The stored record (a replay), or None once the key is ours; raises 409/422 for
        a request still in flight under the key."""
        done = await self.store.claim_idempotency(
            self.sid, self.key, self.fingerprint, LEASE_S, self.scope, self.owner
        )
        if done is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(RENEW_S, self._start_renewing)
        return done

    def record(self, response: bytes) -> IdempotencyRecord:
        return IdempotencyRecord(self.key, self.fingerprint, response, self.scope, self.owner)

    def _start_renewing(self) -> None:
        self._timer = None
        self._renewer = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the store may be failing over: try again
                renewed = await self.store.renew_idempotency(
                    self.sid, self.key, self.fingerprint, LEASE_S, self.scope, self.owner
                )
                if not renewed:
                    return  # committed, released or lost: the commit check decides
            await asyncio.sleep(RENEW_S)

    async def end(self, release: bool) -> None:
        """Stop renewing; `release`: the request did not commit, free the key now (if
        that fails too, the lease frees it)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._renewer is not None:
            self._renewer.cancel()  # not awaited: a renewal in progress changes nothing
        if release:
            with contextlib.suppress(Exception):
                await self.store.release_idempotency(
                    self.sid, self.key, self.fingerprint, self.scope, self.owner
                )
