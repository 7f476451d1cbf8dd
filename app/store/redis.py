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

import json
import secrets
import time
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError

from app.problems import Conflict
from app.store import keys
from app.store.base import (
    IdempotencyRecord,
    SessionSummary,
    StepLog,
)
from app.store.redis_coord import RedisCoordination
from app.store.redis_events import RedisEvents
from app.store.redis_history import RedisHistory
from app.store.redis_log import RedisStepLog
from app.store.redis_read import RedisReads
from app.store.slotcache import Entry, SlotCache, pack

MAX_CHUNK_BYTES = 512 * 2**20 - 2**20  # Redis refuses string values of 512 MB and more
# EVALSHA
_SCRIPTS = ("load", "delete", "idem_get", *RedisCoordination.SCRIPTS, *RedisHistory.HISTORY_SCRIPTS)
_WRITES = ("create", "commit", "append")  # EVAL inside MULTI (commit, append: or EVALSHA)
_CAS_WRITERS = ("create", "commit", "append")  # all start with lua/_cas.lua


def _nbytes(slots: Mapping[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in slots.values())


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class RedisStore(RedisReads, RedisCoordination, RedisStepLog, RedisEvents, RedisHistory):
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
        timeout_s: float = 5.0,
    ) -> None:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}")
        self.client = client
        self.chunk_bytes = chunk_bytes
        self.idempotency_ttl_s = idempotency_ttl_s
        self.where = where
        self.wait_replicas = wait_replicas
        self.timeout_s = timeout_s
        # WAIT must give up before the socket does, or a slow replica reads as a dead Redis
        self.wait_timeout_ms = min(wait_timeout_ms, int(timeout_s * 500))
        self._node_clients: dict[tuple[str, int], Redis] = {}
        self.stats = {"slot_reads": 0, "cache_hits": 0, "log_replays": 0, "log_appends": 0}
        self.stats["log_staged"] = 0
        self.log_steps, self.log_min_bytes = log_steps, log_min_bytes
        self._log_len: dict[str, tuple[int, str, int]] = {}  # sid -> (version, inc, length)
        self._cache = SlotCache(cache_bytes)
        lua = resources.files("app.store") / "lua"
        self._source = {n: (lua / f"{n}.lua").read_text() for n in (*_SCRIPTS, *_WRITES)}
        cas = (lua / "_cas.lua").read_text()  # the compare-and-set core the writers share
        for name in _CAS_WRITERS:
            self._source[name] = cas + self._source[name]
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
        timeout_s: float = 5.0,
    ) -> RedisStore:
        """A pooled client (hiredis when installed) that reconnects by itself after a restart:
        2 s to connect, `timeout_s` per command (OPTD_REDIS_TIMEOUT_S: a hung Redis, say
        SIGSTOPped, is a 503 after it instead of a request that hangs), a health check on
        idle connections,
        and two quick retries of connection errors (a re-sent commit is recognised by its
        token in the script, so it is never applied twice)."""
        opts: dict[str, Any] = {
            "socket_connect_timeout": min(2.0, timeout_s),
            "socket_timeout": timeout_s,
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
            timeout_s=timeout_s,
        )

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
        labels: Mapping[str, str] | None = None,
    ) -> int:
        """A snapshot (every given slot, and the step log is dropped), or with `log` and
        room in the log, an append of the step's gradient: 4 bytes a float32 parameter
        instead of the whole state. Every `log_steps`-th step is a snapshot, so a reader
        replays at most `log_steps - 1` steps."""
        known = self._log_len.get(sid)
        if log is not None and known is not None:
            if labels is None and self.wants_log(sid, expected_version, _nbytes(slots)):
                return await self._append(
                    sid, expected_version, known, meta, slots, log, idempotency, ttl_s, unlock
                )
            await self.discard_log(sid, log.staged)  # not needed after all
        mkey = keys.meta_key(sid)
        token = keys.new_token()
        owned, layout, chunks = pack(sid, slots, token, self.chunk_bytes)
        klist, record = [mkey, *chunks], b""
        if idempotency is not None:
            klist.append(keys.idem_key(sid, idempotency.key, idempotency.scope))
            record = keys.idempotency_arg(idempotency)
        args = [expected_version, ttl_s or 0, record, self.idempotency_ttl_s, meta, token]
        args += [json.dumps(layout), unlock or ""]
        args.append("" if labels is None else json.dumps(dict(labels), sort_keys=True))
        reply = await self._write("commit", chunks, klist, args, inline=True)
        version, inc = self._committed(sid, reply, expected_version, idempotency)
        ent = self._cache.get(sid)
        if ent is not None and ent.version == expected_version and ent.inc == inc:
            owned = {**ent.arrays, **owned}
        self._cache.put(sid, Entry(version, inc, owned, meta=meta))
        self._note_log(sid, version, inc, 0)
        return version

    async def delete(self, sid: str) -> bool:
        """Meta, chunks and the index entry go; idempotency records cannot be found without
        SCAN and expire on their TTL: each is stored with the session's incarnation, so
        neither this session's absence nor a re-created one under the id replays them."""
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

    async def get_idempotency(
        self, sid: str, key: str, scope: str = ""
    ) -> IdempotencyRecord | None:
        if not keys.is_sid(sid):
            return None
        mkey = keys.meta_key(sid)
        value = await self._run("idem_get", [mkey, keys.idem_key(sid, key, scope)], [])
        if value is None or value.startswith(keys.INFLIGHT):
            return None
        fingerprint, response = keys.decode_idempotency(value)
        return IdempotencyRecord(key, fingerprint, response, scope)
