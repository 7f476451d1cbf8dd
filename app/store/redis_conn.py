"""The connection core of the Redis store: the client, its errors as problems, retries
of what a cluster answers while it moves slots, scripts, pipelines, atomic writes and
WAIT. The state (`redis.py`), the gradient log (`redis_log.py`) and the coordination
between API processes (`redis_coord.py`) are built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    ExecAbortError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from app.problems import Conflict, NotFound, StoreUnavailable
from app.store.base import ClaimLost, IdempotencyRecord
from app.store.slotcache import SlotCache

T = TypeVar("T")
PENDING_TTL_S = 600  # chunks SET ahead of their script; it settles them, or they expire
INLINE_BYTES = 64 * 2**10  # slots smaller than this come back inside the load script
# ClusterError: redis-py gave up following redirects (TTL exhausted) mid-migration;
# RuntimeError, AttributeError: raised inside redis-py on a closed transport (see `_errors`).
TRANSIENT = (
    TryAgainError,
    AskError,
    MovedError,
    ClusterDownError,
    ClusterError,
    ExecAbortError,
    RuntimeError,
    AttributeError,
)
TRANSIENT_S = 5.0


def _raised_in_redis(exc: BaseException) -> bool:
    """True if the exception came up through redis-py's code (not from ours)."""
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}redis{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _is_transient(cause: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    # A script that touches a chunk key of a slot in migration gets "non local key"
    # from the node that still owns the meta key: it passes once the slot has moved.
    return isinstance(cause, kinds) or (
        isinstance(cause, ResponseError) and "non local key" in str(cause)
    )


class RedisConn:
    """What every part of the Redis store shares; the attributes are set by `RedisStore`."""

    client: Redis | RedisCluster
    where: str
    wait_replicas: int
    wait_timeout_ms: int
    timeout_s: float  # every command's bound (OPTD_REDIS_TIMEOUT_S)
    _node_clients: dict[tuple[str, int], Redis]
    _source: dict[str, str]
    _scripts: dict[str, AsyncScript]
    _cache: SlotCache  # the version-checked state this process last saw, per session

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Any failure to talk to Redis is a 503 the client may retry, never a raw exception."""
        try:
            yield
        except Exception as exc:
            # Besides its own exceptions, redis-py's cluster client can fail inside itself
            # (RuntimeError, AttributeError) on a transport it closed while re-learning the
            # slot map: for the caller that is a lost connection, like a reset.
            if not isinstance(exc, (RedisError, RedisClusterException, OSError, TimeoutError)):
                if not _raised_in_redis(exc):
                    raise
            raise StoreUnavailable(
                f"Redis at {self.where} is unavailable ({type(exc).__name__}: {exc}). "
                f"Is redis-server running at {self.where}? Set OPTD_REDIS_URL "
                "(and OPTD_REDIS_CLUSTER=1 for a cluster) to point optd at it.",
                retry_after=1,
            ) from exc

    async def _run(self, script: str, keys_: list[str], args: list[Any]) -> Any:
        async def call() -> Any:
            return await self._scripts[script](keys=keys_, args=args)

        return await self._transient(call)

    async def _transient(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry what a cluster answers while it moves slots or elects a master (TRYAGAIN,
        ASK/MOVED inside a transaction, CLUSTERDOWN) for up to TRANSIENT_S, so a resharding
        costs latency, not errors. Retrying is safe: a transaction that got such an answer
        did not execute, and a re-sent commit is recognised by its token."""
        deadline = time.monotonic() + TRANSIENT_S
        pause = 0.02
        while True:
            try:
                with self._errors():
                    return await call()
            except StoreUnavailable as exc:
                transient: tuple[type[BaseException], ...] = TRANSIENT
                if isinstance(self.client, RedisCluster):
                    # redis-py drops connections while it re-learns the slot map
                    transient = (*TRANSIENT, ConnectionError)
                if not _is_transient(exc.__cause__, transient) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def ping(self) -> None:
        with self._errors():
            await self.client.ping()
            if isinstance(self.client, RedisCluster):
                info = await self.client.cluster_info()
                state = info.get("cluster_state") if isinstance(info, dict) else None
                if state not in ("ok", b"ok"):
                    raise StoreUnavailable(
                        f"Redis Cluster at {self.where} reports cluster_state:{state}; "
                        "wait for every slot to be served or fix OPTD_REDIS_URL.",
                        retry_after=1,
                    )

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
        for node in self._node_clients.values():
            with contextlib.suppress(RedisError, OSError):
                await node.aclose()

    async def _write(
        self,
        script: str,
        chunks: Mapping[str, memoryview],
        keys_: list[str],
        args: list[Any],
        inline: bool = False,
        staged: int = 0,
    ) -> Any:
        """MULTI, SET every chunk (EX pending, settled by the script), EVAL, EXEC: one
        atomic round trip in which big values never pass through Lua. `inline` (scripts
        that take it, for small writes): one EVALSHA that SETs the values itself. The
        last `staged` keys were SET before (`stage_log`): the script only settles them."""
        small = inline and sum(len(v) for v in chunks.values()) <= INLINE_BYTES

        async def call() -> Any:
            if small:
                values = list(chunks.values())
                return await self._scripts[script](keys=keys_, args=[*args, len(values), *values])
            async with self.client.pipeline(transaction=True) as pipe:
                for key, value in chunks.items():
                    pipe.set(key, value, ex=PENDING_TTL_S)
                tail = [0] if inline else []
                pipe.eval(self._source[script], len(keys_), *keys_, *args, *tail)
                return (await pipe.execute())[-1]

        reply = await self._transient(call)
        if self.wait_replicas:
            await self._replicate(keys_[0])
        return reply

    async def _pipelined(self, calls: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Independent commands in one round trip (spread over the nodes of a cluster)."""
        batch = list(calls)

        async def call() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for command, args in batch:
                    getattr(pipe, command)(*args)
                return list(await pipe.execute())

        return await self._transient(call)

    async def _replicate(self, meta_key: str) -> None:
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
                host=addr[0],
                port=addr[1],
                socket_connect_timeout=min(2.0, self.timeout_s),
                socket_timeout=self.timeout_s,
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

    def _committed(
        self,
        sid: str,
        reply: list[Any],
        expected_version: int,
        idempotency: IdempotencyRecord | None = None,
    ) -> tuple[int, str]:
        if reply[0] == -1:
            self._cache.pop(sid)
            raise NotFound(f"session {sid} not found")
        if reply[0] == 0:
            raise Conflict(
                f"session {sid} is at version {reply[1]}, not {expected_version}",
                current_version=int(reply[1]),
            )
        if reply[0] == -3:
            # the Idempotency-Key is another request's now: nothing was written
            raise ClaimLost(idempotency.key if idempotency else "")
        if reply[0] == -2:
            raise RuntimeError("a commit over a step log must write every slot (a snapshot)")
        return int(reply[1]), reply[2].decode()
