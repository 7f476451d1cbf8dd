"""Coordination between API processes on Redis: idempotency claims, the advisory step
lock and sync-mode barriers. Every key carries the session's hash tag (one cluster slot).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from app.problems import Conflict, NotFound
from app.store import keys
from app.store.base import IdempotencyRecord, Member, refuse_in_flight
from app.store.redis_conn import RedisConn


class RedisCoordination(RedisConn):
    """The coordination part of RedisStore: idempotency claims, the advisory lock, sync
    rounds, tenants' quotas and request rates."""

    SCRIPTS = (
        "barrier_add",
        "idem_claim",
        "idem_renew",
        "idem_release",
        "compare_del",
        "quota_add",
        "quota_gen",
        "quota_recount",
        "rate_take",
        "owner",
    )

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

    async def owner_claim(self, sid: str, me: str, ttl_ms: int) -> tuple[str, int]:
        keys_ = [keys.owner_key(sid), keys.meta_key(sid)]
        holder, left = await self._run("owner", keys_, [me, ttl_ms])
        return _text(holder), int(left)

    async def owner_release(self, sid: str, me: str) -> None:
        await self._run("compare_del", [keys.owner_key(sid)], [me])

    async def barrier_add(
        self, sid: str, version: int, worker: str, blob: bytes, ttl_s: int
    ) -> tuple[int, bool]:
        keys_ = [keys.barrier_key(sid, version), keys.rounds_key(sid), keys.members_key(sid),
                 keys.meta_key(sid)]  # fmt: skip
        args = [worker, blob, ttl_s, str(version), repr(time.time())]
        count, added = await self._run("barrier_add", keys_, args)
        if count == -2:
            raise NotFound(f"session {sid} not found")
        if count == -1:  # `added` is the session's version: the round on `version` closed
            raise Conflict(
                f"session {sid} is at version {added}, not {version}",
                current_version=int(added),
            )
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
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(keys.barrier_key(sid, version))
                pipe.hdel(keys.rounds_key(sid), str(version))
                return await pipe.execute()

        await self._transient(call)

    async def barrier_workers(self, sid: str, version: int) -> tuple[list[str], float | None]:
        async def call() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hkeys(keys.barrier_key(sid, version))
                pipe.hget(keys.rounds_key(sid), str(version))
                return list(await pipe.execute())

        workers, opened = await self._transient(call)
        return [_text(w) for w in workers], None if opened is None else float(opened)

    async def member_touch(
        self, sid: str, worker: str, now: float, contributed: int | None, ttl_s: int
    ) -> None:
        mkey = keys.members_key(sid)

        async def call() -> Any:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(mkey, "s:" + worker, repr(now))
                if contributed is not None:
                    pipe.hincrby(mkey, "r:" + worker, 1)
                    pipe.hset(mkey, "v:" + worker, str(contributed))
                pipe.expire(mkey, ttl_s)
                return await pipe.execute()

        await self._transient(call)

    async def member_leave(self, sid: str, worker: str) -> bool:
        async def call() -> Any:
            return await self.client.hdel(
                keys.members_key(sid), "s:" + worker, "r:" + worker, "v:" + worker
            )

        return bool(await self._transient(call))

    async def members(self, sid: str) -> dict[str, Member]:
        async def call() -> Any:
            return await self.client.hgetall(keys.members_key(sid))

        raw = {_text(k): _text(v) for k, v in (await self._transient(call)).items()}
        out = {k[2:]: Member(float(v)) for k, v in raw.items() if k.startswith("s:")}
        for k, v in raw.items():
            m = out.get(k[2:])
            if m is not None and k.startswith("r:"):
                m.rounds = int(v)
            elif m is not None and k.startswith("v:"):
                m.last_version = int(v)
        return out

    async def quota_add(
        self,
        tenant: str,
        sessions: int,
        nbytes: int,
        max_sessions: int | None,
        max_bytes: int | None,
        pending: int = 0,
    ) -> bool:
        limits = [
            -1 if max_sessions is None else max_sessions,
            -1 if max_bytes is None else max_bytes,
        ]
        args = [sessions, nbytes, *limits, pending]
        return bool(await self._run("quota_add", [keys.usage_key(tenant)], args))

    async def quota_gen(self, tenant: str, stale_ms: int) -> int | None:
        gen = await self._run("quota_gen", [keys.usage_key(tenant)], [stale_ms])
        return None if int(gen) < 0 else int(gen)

    async def quota_recount(self, tenant: str, gen: int, sessions: int, nbytes: int) -> bool:
        args = [gen, sessions, nbytes]
        return bool(await self._run("quota_recount", [keys.usage_key(tenant)], args))

    async def rate_take(self, tenant: str, rate: float, burst: float) -> float:
        wait_ms = await self._run("rate_take", [keys.bucket_key(tenant)], [rate, burst])
        return float(wait_ms) / 1000.0


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _raw(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()
