"""The embedded store's idempotency claims and records (a part of `MemoryStore`, which
supplies `_get`, `_sessions` and `clock`): the same rules as the Redis scripts
(lua/idem_*.lua and `CAS.claim_held` in lua/_cas.lua), so both stores answer alike.

Records and claims live in their session (dropped with it) and are keyed by (tenant,
Idempotency-Key); a claim is a lease its owner renews while its request runs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from app.problems import NotFound
from app.store.base import IdempotencyRecord, refuse_in_flight


class MemoryIdempotency:
    clock: Callable[[], float]
    _sessions: dict[str, Any]

    def _get(self, sid: str) -> Any:
        raise NotImplementedError  # MemoryStore's

    def _claim_held(self, sess: Any, rec: IdempotencyRecord) -> bool:
        """The commit's half of the claim (as `CAS.claim_held` in lua/_cas.lua): the key
        holds our own claim, or nothing; never another's claim or a record."""
        at, now = (rec.scope, rec.key), self.clock()
        done = sess.idempotency.get(at)
        if done is not None and done[1] > now:
            return False
        held = sess.inflight.get(at)
        return held is None or held[1] <= now or held[2] == rec.owner

    async def get_idempotency(
        self, sid: str, key: str, scope: str = ""
    ) -> IdempotencyRecord | None:
        try:
            sess = self._get(sid)
        except NotFound:
            return None
        hit: tuple[IdempotencyRecord, float] | None = sess.idempotency.get((scope, key))
        if hit is None:
            return None
        if hit[1] <= self.clock():
            del sess.idempotency[(scope, key)]
            return None
        return hit[0]

    async def claim_idempotency(
        self, sid: str, key: str, fingerprint: str, ttl_s: float, scope: str = "", owner: str = ""
    ) -> IdempotencyRecord | None:
        done = await self.get_idempotency(sid, key, scope)
        if done is not None:
            return done
        sess = self._get(sid)
        now = self.clock()
        held = sess.inflight.get((scope, key))
        if held is not None and held[1] > now:
            refuse_in_flight(key, held[0] == fingerprint)
        sess.inflight[(scope, key)] = (fingerprint, now + ttl_s, owner or secrets.token_hex(8))
        return None

    async def renew_idempotency(
        self, sid: str, key: str, fingerprint: str, ttl_s: float, scope: str, owner: str
    ) -> bool:
        sess = self._sessions.get(sid)
        held = None if sess is None else sess.inflight.get((scope, key))
        if sess is None or held is None or held[2] != owner or held[1] <= self.clock():
            return False
        sess.inflight[(scope, key)] = (held[0], self.clock() + ttl_s, owner)
        return True

    async def release_idempotency(
        self, sid: str, key: str, fingerprint: str, scope: str = "", owner: str = ""
    ) -> None:
        sess = self._sessions.get(sid)
        held = None if sess is None else sess.inflight.get((scope, key))
        if sess is not None and held is not None and held[0] == fingerprint:
            if not owner or held[2] == owner:
                del sess.inflight[(scope, key)]
