"""The production store: sessions in Redis (or Redis Cluster), one round trip per step.

Writes (create, commit) are one MULTI/EXEC: the SETs of new chunk keys (named by a random
token, never rewritten) and then a Lua compare-and-set on the version that points the
layout in meta at them and unlinks what they replace. Big values so never pass through
Lua, which copies every argument (3 x 4 MB: ~22 ms in a script, ~6 ms as plain SETs).
Reads are one Lua script returning meta and small slots; big slots follow in one pipeline
of GETs. KEYS/ARGV conventions are at the top of each `lua/*.lua`. Every key carries the
session's hash tag; scripts name chunk keys from KEYS[1]'s prefix (same cluster slot).

A process keeps an LRU of the last state it saw per session, keyed by version and
incarnation; `load` sends that version and the script skips slots the process already
has, so a worker stepping the same session again reads back only the meta.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
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
from app.store import keys
from app.store.base import (
    IdempotencyRecord,
    Locked,
    Replayer,
    SessionSummary,
    StepLog,
    StoredSession,
)
from app.store.redis_coord import RedisCoordination
from app.store.redis_log import PENDING_TTL_S, RedisStepLog
from app.store.slotcache import Entry, SlotCache, decode, fresh, pack

T = TypeVar("T")
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
MAX_CHUNK_BYTES = 512 * 2**20 - 2**20  # Redis refuses string values of 512 MB and more
INLINE_BYTES = 64 * 2**10  # slots smaller than this come back inside the load script
_SCRIPTS = ("load", "delete", "idem_get", *RedisCoordination.SCRIPTS)  # EVALSHA
_WRITES = ("create", "commit", "append")  # EVAL inside MULTI (commit, append: or EVALSHA)


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


def _own(a: np.ndarray) -> np.ndarray:
    """Hand a cached array to a step that will mutate it: no copy when we own its memory
    (the arrays a commit cached are the engine's own), else a copy."""
    try:
        a.setflags(write=True)
        return a
    except ValueError:
        return fresh(a)


def _nbytes(slots: Mapping[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in slots.values())


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class RedisStore(RedisCoordination, RedisStepLog):
    kind = "redis"

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        chunk_bytes: int = 64 * 2**20,
        cache_bytes: int = 2**30,
        idempotency_ttl_s: int = 86400,
        where: str = "the configured URL",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 2000,
        log_steps: int = 8,
        log_min_bytes: int = 2**20,
    ) -> None:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}")
        self.client = client
        self.chunk_bytes = chunk_bytes
        self.idempotency_ttl_s = idempotency_ttl_s
        self.where = where
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._node_clients: dict[tuple[str, int], Redis] = {}
        self.stats = {"slot_reads": 0, "cache_hits": 0, "log_replays": 0, "log_appends": 0}
        self.stats["log_staged"] = 0
        self.log_steps, self.log_min_bytes = log_steps, log_min_bytes
        self.replayer: Replayer | None = None
        self._log_len: dict[str, tuple[int, str, int]] = {}  # sid -> (version, inc, length)
        self._cache = SlotCache(cache_bytes)
        lua = resources.files("app.store") / "lua"
        self._source = {n: (lua / f"{n}.lua").read_text() for n in (*_SCRIPTS, *_WRITES)}
        self._scripts = {n: client.register_script(self._source[n]) for n in (*_SCRIPTS, *_WRITES)}

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        cluster: bool = False,
        chunk_bytes: int = 64 * 2**20,
        cache_bytes: int = 2**30,
        idempotency_ttl_s: int = 86400,
        wait_replicas: int = 0,
        log_steps: int = 8,
        log_min_bytes: int = 2**20,
    ) -> RedisStore:
        """A pooled client (hiredis when installed) that reconnects by itself after a restart:
        2 s to connect, 30 s per command (large values), a health check on idle connections,
        and two quick retries of connection errors (a re-sent commit is recognised by its
        token in the script, so it is never applied twice)."""
        opts: dict[str, Any] = {
            "socket_connect_timeout": 2.0,
            "socket_timeout": 30.0,
            "health_check_interval": 10,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, (ConnectionError,)),
        }
        client: Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, **opts)
        else:
            client = Redis.from_url(url, **opts)
        return cls(
            client,
            chunk_bytes=chunk_bytes,
            cache_bytes=cache_bytes,
            idempotency_ttl_s=idempotency_ttl_s,
            where=_safe_url(url),
            wait_replicas=wait_replicas,
            log_steps=log_steps,
            log_min_bytes=log_min_bytes,
        )

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

    async def create(
        self,
        sid: str,
        meta: bytes,
        slots: Mapping[str, np.ndarray],
        labels: Mapping[str, str],
        ttl_s: int | None = None,
    ) -> None:
        mkey = keys.meta_key(keys.check_new_sid(sid))
        token, inc = keys.new_token(), secrets.token_hex(8)
        owned, layout, chunks = pack(sid, slots, token, self.chunk_bytes)
        labels_json = json.dumps(dict(labels), sort_keys=True)
        args = [ttl_s or 0, meta, labels_json, json.dumps(layout), time.time(), inc, token]
        created = await self._write("create", chunks, [mkey, *chunks], args)
        if not created:
            raise Conflict(f"session {sid} already exists")
        with self._errors():
            await self.client.zadd(keys.index_key(keys.index_shard(sid)), {sid: 0})
        self._cache.put(sid, Entry(0, inc, owned, meta=meta))
        self._note_log(sid, 0, inc, 0)

    async def load(
        self,
        sid: str,
        slots: Sequence[str] | None = None,
        *,
        take: bool = False,
        lock: tuple[str, int] | None = None,
        cached: bool = False,
    ) -> StoredSession:
        mkey = keys.meta_key(sid)
        if cached and take:
            ent = self._cache.get(sid)
            if ent is not None and ent.meta is not None:
                # the state this process committed last: the commit's compare-and-set finds
                # out if anyone moved on since (then the engine loads for real)
                self._cache.pop(sid)
                own = {n: _own(a) for n, a in ent.arrays.items()}
                return StoredSession(ent.version, ent.meta, own, cached=True)
        names = None if slots is None else [keys.check_slot(s) for s in slots]
        # A commit between our two reads unlinks chunks, and while a cluster migrates the
        # session's slot a chunk may already sit on the other node: read again, with a
        # growing pause, for up to TRANSIENT_S.
        deadline, pause = time.monotonic() + TRANSIENT_S, 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(max(pause * 2, 0.005), 0.25)
            ent = self._cache.get(sid)
            held: dict[str, np.ndarray] = {}
            if ent is not None:
                # Cached arrays are never mutated while cached. A step (`take`) removes
                # them before it mutates them; a reader copies the ones it wants now, before
                # yielding, so no step can change them under its copy. (A reader behind a
                # step log therefore replays onto the snapshot, not onto a partial copy:
                # the script only offers the cache as a base to a caller holding every slot.)
                if take:
                    self._cache.pop(sid)
                    held = dict(ent.arrays)
                else:
                    held = {
                        n: fresh(a) for n, a in ent.arrays.items() if names is None or n in names
                    }
            args: list[Any] = [-1, ""] if ent is None else [ent.version, ent.inc]
            args += [INLINE_BYTES, *(lock or ("", 0))]
            args += [-1] if names is None else [len(names), *names]
            args += list(held)
            reply = await self._run("load", [mkey], args)
            if not reply:
                self._cache.pop(sid)
                raise NotFound(f"session {sid} not found")
            if len(reply) == 1:
                if take and ent is not None:
                    self._cache.put(sid, ent)  # untouched: give it back
                raise Locked(sid)
            lock = None  # held from here on, also when this read is retried
            h = dict(zip(reply[0][::2], reply[0][1::2], strict=True))
            want, chunks = [w.decode() for w in reply[1]], reply[3:]
            version, inc = int(h[b"version"]), h[b"inc"].decode()
            layout: dict[str, list[Any]] = json.loads(h[b"slots"])
            log: list[list[Any]] = json.loads(h[b"log"]) if b"log" in h else []
            self._note_log(sid, version, inc, len(log))
            if not reply[2]:
                chunks = await self._get_chunks(sid, [(n, layout[n]) for n in want])
            if any(c is None for c in chunks):
                continue
            got, pos = {}, 0
            for name in want:
                dtype, length, n = layout[name][:3]
                got[name] = decode(chunks[pos : pos + n], dtype, length)
                pos += n
            self.stats["slot_reads"] += len(got)
            hit = ent is not None and ent.version == version and ent.inc == inc
            wanted = list(layout) if names is None else [n for n in names if n in layout]
            if log and wanted and (want or not hit):
                # a step log on top of the snapshot (or of our copy): replay it
                if want:
                    base, since = {n: fresh(got[n]) for n in want}, version - len(log)
                else:
                    assert ent is not None  # the script only skips slots we hold
                    base = {n: _own(a) for n, a in held.items()} if take else held
                    since = ent.version
                if not await self._replay_log(sid, base, log[len(log) - (version - since) :]):
                    continue
                if not take:
                    frozen = {n: fresh(a) for n, a in base.items()}
                    for a in frozen.values():
                        a.setflags(write=False)
                    self._cache.put(sid, Entry(version, inc, frozen, True, h[b"meta"]))
                return StoredSession(version, h[b"meta"], {n: base[n] for n in wanted})
            if hit:
                self.stats["cache_hits"] += 1
            else:
                held = {}
            if not take and (ent is None or self._cache.get(sid) is ent):
                # (if a step took the entry while we waited, its arrays are being mutated:
                # never put them back)
                keep = {**ent.arrays, **got} if hit and ent is not None else got
                meta = h[b"meta"] if names is None else None  # the whole state?
                self._cache.put(sid, Entry(version, inc, keep, bool(log), meta))
            out = {
                n: (_own(held[n]) if take else held[n]) if n in held else fresh(got[n])
                for n in wanted
            }
            return StoredSession(version, h[b"meta"], out)
        raise StoreUnavailable(f"session {sid} changed under every read; retry", retry_after=1)

    async def _pipelined(self, calls: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Independent commands in one round trip (spread over the nodes of a cluster)."""
        batch = list(calls)

        async def call() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for command, args in batch:
                    getattr(pipe, command)(*args)
                return list(await pipe.execute())

        return await self._transient(call)

    async def _get_chunks(self, sid: str, slots: list[tuple[str, list[Any]]]) -> list[Any]:
        """Big slots: one pipeline of GETs (far cheaper than passing them through Lua)."""
        return await self._pipelined(
            ("get", [keys.chunk_key(sid, name, token, c)])
            for name, (_, _, n, token, _) in slots
            for c in range(n)
        )

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
    ) -> int:
        """A snapshot (every given slot, and the step log is dropped), or with `log` and
        room in the log, an append of the step's gradient: 4 bytes a float32 parameter
        instead of the whole state. Every `log_steps`-th step is a snapshot, so a reader
        replays at most `log_steps - 1` steps."""
        known = self._log_len.get(sid)
        if log is not None and known is not None:
            if self.wants_log(sid, expected_version, _nbytes(slots)):
                return await self._append(
                    sid, expected_version, known, meta, slots, log, idempotency, ttl_s, unlock
                )
            await self.discard_log(sid, log.staged)  # not needed after all
        mkey = keys.meta_key(sid)
        token = keys.new_token()
        owned, layout, chunks = pack(sid, slots, token, self.chunk_bytes)
        klist, record = [mkey, *chunks], b""
        if idempotency is not None:
            klist.append(keys.idem_key(sid, idempotency.key))
            record = keys.encode_idempotency(idempotency.fingerprint, idempotency.response)
        args = [expected_version, ttl_s or 0, record, self.idempotency_ttl_s, meta, token]
        args += [json.dumps(layout), unlock or ""]
        reply = await self._write("commit", chunks, klist, args, inline=True)
        version, inc = self._committed(sid, reply, expected_version)
        ent = self._cache.get(sid)
        if ent is not None and ent.version == expected_version and ent.inc == inc:
            owned = {**ent.arrays, **owned}
        self._cache.put(sid, Entry(version, inc, owned, meta=meta))
        self._note_log(sid, version, inc, 0)
        return version

    def _committed(self, sid: str, reply: list[Any], expected_version: int) -> tuple[int, str]:
        if reply[0] == -1:
            self._cache.pop(sid)
            raise NotFound(f"session {sid} not found")
        if reply[0] == 0:
            raise Conflict(
                f"session {sid} is at version {reply[1]}, not {expected_version}",
                current_version=int(reply[1]),
            )
        if reply[0] == -2:
            raise RuntimeError("a commit over a step log must write every slot (a snapshot)")
        return int(reply[1]), reply[2].decode()

    async def delete(self, sid: str) -> bool:
        """Meta, chunks and the index entry go; idempotency records cannot be found without
        SCAN and expire on their TTL (`get_idempotency` ignores them once meta is gone)."""
        if not keys.is_sid(sid):
            return False
        mkey = keys.meta_key(sid)
        self._cache.pop(sid)
        existed = await self._run("delete", [mkey], [])
        with self._errors():
            await self.client.zrem(keys.index_key(keys.index_shard(sid)), sid)
        return bool(existed)

    async def list(
        self, cursor: str | None, limit: int, labels: Mapping[str, str] | None = None
    ) -> tuple[list[SessionSummary], str | None]:
        """Merge the index shards in id order. Entries whose meta is gone (expired, or a
        delete that died before its ZREM) are skipped and removed. Work per call is bounded:
        with a label filter a page may come back short, with a cursor to continue."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after, want = keys.decode_cursor(cursor), dict(labels or {})
        page: list[SessionSummary] = []
        budget = max(10 * limit, 1000)
        while True:
            batch, lo = limit - len(page), "-" if after is None else "(" + after
            ranges = await self._pipelined(
                ("zrangebylex", [keys.index_key(shard), lo, "+", 0, batch + 1])
                for shard in range(keys.INDEX_SHARDS)
            )  # each shard's next batch + 1 ids: the first `batch` of the union are exact
            union = sorted({m.decode() for r in ranges for m in r})
            cands = [s for s in union[:batch] if keys.is_sid(s)]
            fields = ["version", "meta", "labels"]
            metas = await self._pipelined(("hmget", [keys.meta_key(s), fields]) for s in cands)
            gone = []
            for sid, (ver, meta, lab) in zip(cands, metas, strict=True):
                if ver is None:
                    gone.append(sid)
                elif all(json.loads(lab).get(k) == v for k, v in want.items()):
                    page.append(SessionSummary(sid, int(ver), meta))
            if gone:
                await self._pipelined(
                    ("zrem", [keys.index_key(keys.index_shard(s)), s]) for s in gone
                )
            budget -= batch
            if len(union) <= batch:
                return page, None
            after = union[batch - 1]
            if len(page) >= limit or budget <= 0:
                return page, keys.encode_cursor(after)

    async def get_idempotency(self, sid: str, key: str) -> IdempotencyRecord | None:
        if not keys.is_sid(sid):
            return None
        mkey = keys.meta_key(sid)
        value = await self._run("idem_get", [mkey, keys.idem_key(sid, key)], [])
        if value is None or value.startswith(keys.INFLIGHT):
            return None
        fingerprint, response = keys.decode_idempotency(value)
        return IdempotencyRecord(key, fingerprint, response)
