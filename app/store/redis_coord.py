"""Coordination between API processes on Redis: idempotency claims, the advisory step
lock and sync-mode barriers. Every key carries the session's hash tag (one cluster slot).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.problems import Conflict, IdempotencyMismatch, NotFound, StoreUnavailable
from app.store import keys
from app.store.base import IdempotencyRecord

T = TypeVar("T")


class _Host(Protocol):
    client: Redis | RedisCluster
    wait_replicas: int
    wait_timeout_ms: int
    _node_clients: dict[tuple[str, int], Redis]

    def _errors(self) -> contextlib.AbstractContextManager[None]: ...

    async def _transient(self, call: Callable[[], Awaitable[T]]) -> T: ...

    async def _replicate(self, meta_key: str) -> None: ...

    async def _run(self, script: str, keys_: list[str], args: list[Any]) -> Any: ...


class RedisCoordination:
    """Mixed into RedisStore; needs its `client`, `_errors` and `_run`."""

    SCRIPTS = ("idem_claim", "idem_release", "compare_del", "quota_add", "rate_take")

    async def _replicate(self: _Host, meta_key: str) -> None:
        """OPTD_REDIS_WAIT_REPLICAS: acknowledge a write only once N replicas have it.

        WAIT counts the replication offset of its own connection, and the commit went out
        on a pooled one; so a tiny write to the same slot and the WAIT travel together on
        one connection to the session's master: replicas that acknowledge that later
        write also hold the commit before it (one replication stream per master)."""
        ack = meta_key[: -len("meta")] + "ack"
        node_client: Redis
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(ack)
            if node is None:
                raise StoreUnavailable("no master serves this session's slot", retry_after=1)
            addr = (str(node.host), int(node.port))
            node_client = self._node_clients.get(addr) or Redis(
                host=addr[0], port=addr[1], socket_connect_timeout=2.0, socket_timeout=30.0
            )
            self._node_clients[addr] = node_client
        else:
            node_client = self.client
        with self._errors():
            async with node_client.pipeline(transaction=False) as pipe:
                pipe.set(ack, b"1", px=60_000)
                pipe.wait(self.wait_replicas, self.wait_timeout_ms)
                _, acked = await pipe.execute()
        if int(acked) < self.wait_replicas:
            raise StoreUnavailable(
                f"the write reached {acked} of {self.wait_replicas} replicas within "
                f"{self.wait_timeout_ms} ms (OPTD_REDIS_WAIT_REPLICAS); it is applied but "
                "not yet safe: retry with the same Idempotency-Key",
                retry_after=1,
            )

    async def claim_idempotency(
        self: _Host, sid: str, key: str, fingerprint: str, ttl_s: float
    ) -> IdempotencyRecord | None:
        mkey, ikey = keys.meta_key(sid), keys.idem_key(sid, key)
        # A nonce per claim: if the cluster client re-sends our claim (redirects during a
        # resharding) and it runs twice, the second run finds our own marker, not a rival.
        mine = keys.INFLIGHT + fingerprint.encode() + b":"
        marker = mine + secrets.token_hex(8).encode()
        reply = await self._run("idem_claim", [mkey, ikey], [marker, int(ttl_s * 1000)])
        if reply[0] == -1:
            raise NotFound(f"session {sid} not found")
        if reply[0] == 0 or reply[1] == marker:
            return None
        value: bytes = reply[1]
        if value.startswith(keys.INFLIGHT):
            if not value.startswith(mine):
                raise IdempotencyMismatch(
                    f"Idempotency-Key {key!r} is in use for another request body"
                )
            raise Conflict(
                f"a request with Idempotency-Key {key!r} is still in flight; retry shortly",
                in_flight=True,
                retry_after=1,
            )
        fp, response = keys.decode_idempotency(value)
        if self.wait_replicas:
            # a replay acknowledges the step too: not before N replicas hold it
            await self._replicate(mkey)
        return IdempotencyRecord(key, fp, response)

    async def release_idempotency(self: _Host, sid: str, key: str, fingerprint: str) -> None:
        mine = keys.INFLIGHT + fingerprint.encode() + b":"
        await self._run("idem_release", [keys.idem_key(sid, key)], [mine])

    async def try_lock(self: _Host, sid: str, token: str, ttl_ms: int) -> bool:
        async def call() -> bool:
            return bool(await self.client.set(keys.lock_key(sid), token, nx=True, px=ttl_ms))

        return await self._transient(call)

    async def unlock(self: _Host, sid: str, token: str) -> None:
        await self._run("compare_del", [keys.lock_key(sid)], [token])

    async def barrier_add(
        self: _Host, sid: str, version: int, worker: str, blob: bytes, ttl_s: int
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

    async def barrier_get(self: _Host, sid: str, version: int) -> dict[str, bytes]:
        async def call() -> Any:
            return await self.client.hgetall(keys.barrier_key(sid, version))

        raw = await self._transient(call)
        # decode_responses is off: keys and values are bytes
        return {_text(k): _raw(v) for k, v in raw.items()}

    async def barrier_count(self: _Host, sid: str, version: int) -> int:
        async def call() -> Any:
            return await self.client.hlen(keys.barrier_key(sid, version))

        return int(await self._transient(call))

    async def barrier_clear(self: _Host, sid: str, version: int) -> None:
        async def call() -> Any:
            return await self.client.delete(keys.barrier_key(sid, version))

        await self._transient(call)

    async def quota_add(
        self: _Host,
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

    async def rate_take(self: _Host, tenant: str, rate: float, burst: float) -> float:
        wait_ms = await self._run("rate_take", [keys.bucket_key(tenant)], [rate, burst])
        return float(wait_ms) / 1000.0


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _raw(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()
