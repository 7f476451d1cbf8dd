"""Coordination between API processes on Redis: idempotency claims, the advisory step
lock and sync-mode barriers. Every key carries the session's hash tag (one cluster slot).
"""

from __future__ import annotations

import secrets
from typing import Any

from app.problems import NotFound
from app.store import keys
from app.store.base import IdempotencyRecord, refuse_in_flight
from app.store.redis_conn import RedisConn


class RedisCoordination(RedisConn):
    """The coordination part of RedisStore: idempotency claims, the advisory lock, sync
    rounds, tenants' quotas and request rates."""

    SCRIPTS = ("idem_claim", "idem_renew", "idem_release", "compare_del", "quota_add", "rate_take")

    async def claim_idempotency(
        self, sid: str, key: str, fingerprint: str, ttl_s: float, scope: str = "", owner: str = ""
    ) -> IdempotencyRecord | None:
        mkey, ikey = keys.meta_key(sid), keys.idem_key(sid, key, scope)
        # The owner (random per claim) also makes a re-sent claim safe: if the cluster client
        # re-sends it (redirects during a resharding) and it runs twice, the second run finds
        # our own marker, not a rival.
        marker = keys.inflight_marker(fingerprint, owner or secrets.token_hex(8))
        reply = await self._run("idem_claim", [mkey, ikey], [marker, max(1, int(ttl_s * 1000))])
        if reply[0] == -1:
            raise NotFound(f"session {sid} not found")
        if reply[0] == 0 or reply[1] == marker:
            return None
        value: bytes = reply[1]
        if value.startswith(keys.INFLIGHT):
            refuse_in_flight(key, value.startswith(keys.inflight_marker(fingerprint, "")))
        fp, response = keys.decode_idempotency(value)
        if self.wait_replicas:
            # a replay acknowledges the step too: not before N replicas hold it
            await self._replicate(mkey)
        return IdempotencyRecord(key, fp, response, scope)

    async def renew_idempotency(
        self, sid: str, key: str, fingerprint: str, ttl_s: float, scope: str, owner: str
    ) -> bool:
        marker = keys.inflight_marker(fingerprint, owner)
        ikey = keys.idem_key(sid, key, scope)
        return bool(await self._run("idem_renew", [ikey], [marker, max(1, int(ttl_s * 1000))]))

    async def release_idempotency(
        self, sid: str, key: str, fingerprint: str, scope: str = "", owner: str = ""
    ) -> None:
        if not owner:
            return  # a claim whose owner nobody kept: its lease frees it
        marker = keys.inflight_marker(fingerprint, owner)
        await self._run("idem_release", [keys.idem_key(sid, key, scope)], [marker])

    async def try_lock(self, sid: str, token: str, ttl_ms: int) -> bool:
        async def call() -> bool:
            return bool(await self.client.set(keys.lock_key(sid), token, nx=True, px=ttl_ms))

        return await self._transient(call)

    async def unlock(self, sid: str, token: str) -> None:
        await self._run("compare_del", [keys.lock_key(sid)], [token])

    async def barrier_add(
        self, sid: str, version: int, worker: str, blob: bytes, ttl_s: int
    ) -> tuple[int, bool]:
        bkey = keys.barrier_key(sid, version)

        async def call() -> list[Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(bkey, worker, blob)
                pipe.hlen(bkey)
                pipe.expire(bkey, ttl_s)
                return list(await pipe.execute())

        added, count, _ = await self._transient(call)
        return int(count), bool(added)

    async def barrier_get(self, sid: str, version: int) -> dict[str, bytes]:
        async def call() -> Any:
            return await self.client.hgetall(keys.barrier_key(sid, version))

        raw = await self._transient(call)
        # decode_responses is off: keys and values are bytes
        return {_text(k): _raw(v) for k, v in raw.items()}

    async def barrier_count(self, sid: str, version: int) -> int:
        async def call() -> Any:
            return await self.client.hlen(keys.barrier_key(sid, version))

        return int(await self._transient(call))

    async def barrier_clear(self, sid: str, version: int) -> None:
        async def call() -> Any:
            return await self.client.delete(keys.barrier_key(sid, version))

        await self._transient(call)

    async def quota_add(
        self,
        tenant: str,
        sessions: int,
        nbytes: int,
        max_sessions: int | None,
        max_bytes: int | None,
    ) -> bool:
        limits = [
            -1 if max_sessions is None else max_sessions,
            -1 if max_bytes is None else max_bytes,
        ]
        ok = await self._run("quota_add", [keys.usage_key(tenant)], [sessions, nbytes, *limits])
        return bool(ok)

    async def rate_take(self, tenant: str, rate: float, burst: float) -> float:
        wait_ms = await self._run("rate_take", [keys.bucket_key(tenant)], [rate, burst])
        return float(wait_ms) / 1000.0


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _raw(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()
