"""Coordination between API processes on Redis: idempotency claims, the advisory step
lock and sync-mode barriers. Every key carries the session's hash tag (one cluster slot).
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.problems import Conflict, IdempotencyMismatch, NotFound
from app.store import keys
from app.store.base import IdempotencyRecord


class _Host(Protocol):
    client: Redis | RedisCluster

    def _errors(self) -> contextlib.AbstractContextManager[None]: ...

    async def _run(self, script: str, keys_: list[str], args: list[Any]) -> Any: ...


class RedisCoordination:
    """Mixed into RedisStore; needs its `client`, `_errors` and `_run`."""

    SCRIPTS = ("idem_claim", "compare_del")

    async def claim_idempotency(
        self: _Host, sid: str, key: str, fingerprint: str, ttl_s: float
    ) -> IdempotencyRecord | None:
        mkey, ikey = keys.meta_key(sid), keys.idem_key(sid, key)
        marker = keys.INFLIGHT + fingerprint.encode()
        reply = await self._run("idem_claim", [mkey, ikey], [marker, int(ttl_s * 1000)])
        if reply[0] == -1:
            raise NotFound(f"session {sid} not found")
        if reply[0] == 0:
            return None
        value: bytes = reply[1]
        if value.startswith(keys.INFLIGHT):
            if value != marker:
                raise IdempotencyMismatch(
                    f"Idempotency-Key {key!r} is in use for another request body"
                )
            raise Conflict(
                f"a request with Idempotency-Key {key!r} is still in flight; retry shortly",
                in_flight=True,
                retry_after=1,
            )
        fp, response = keys.decode_idempotency(value)
        return IdempotencyRecord(key, fp, response)

    async def release_idempotency(self: _Host, sid: str, key: str, fingerprint: str) -> None:
        marker = keys.INFLIGHT + fingerprint.encode()
        await self._run("compare_del", [keys.idem_key(sid, key)], [marker])

    async def try_lock(self: _Host, sid: str, token: str, ttl_ms: int) -> bool:
        with self._errors():
            return bool(await self.client.set(keys.lock_key(sid), token, nx=True, px=ttl_ms))

    async def unlock(self: _Host, sid: str, token: str) -> None:
        await self._run("compare_del", [keys.lock_key(sid)], [token])

    async def barrier_add(
        self: _Host, sid: str, version: int, worker: str, blob: bytes, ttl_s: int
    ) -> tuple[int, bool]:
        bkey = keys.barrier_key(sid, version)
        with self._errors():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(bkey, worker, blob)
                pipe.hlen(bkey)
                pipe.expire(bkey, ttl_s)
                added, count, _ = await pipe.execute()
        return int(count), bool(added)

    async def barrier_get(self: _Host, sid: str, version: int) -> dict[str, bytes]:
        with self._errors():
            raw = await self.client.hgetall(keys.barrier_key(sid, version))
        # decode_responses is off: keys and values are bytes
        return {_text(k): _raw(v) for k, v in raw.items()}

    async def barrier_clear(self: _Host, sid: str, version: int) -> None:
        with self._errors():
            await self.client.delete(keys.barrier_key(sid, version))


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _raw(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()
