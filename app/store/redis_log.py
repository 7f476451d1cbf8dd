"""The gradient log on Redis (DESIGN §8 "Gradient log"): a step of a big session kept as
its gradient on top of the last snapshot, and the entries a reader replays. Part of RedisStore;
the layout of the keys is in `keys`, the scripts are `lua/append.lua` (and the log's side
of `commit.lua`, `load.lua`, `delete.lua`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.store import keys
from app.store.base import IdempotencyRecord, StepLog
from app.store.redis_conn import PENDING_TTL_S, RedisConn
from app.store.slotcache import Entry, decode, encode


@dataclass
class _Staged:
    """A gradient whose log chunks `stage_log` already SET (pending)."""

    token: str
    keys: list[str]
    grad: np.ndarray


def _grad_chunks(sid: str, token: str, grad: np.ndarray, chunk_bytes: int) -> dict[str, memoryview]:
    _, _, raw = encode(grad)
    return {
        keys.log_key(sid, token, c): raw[i : i + chunk_bytes]
        for c, i in enumerate(range(0, max(len(raw), 1), chunk_bytes))
    }


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """The same bytes (two views of one request body), not merely equal ones."""
    ia, ib = a.__array_interface__, b.__array_interface__
    return bool(ia["data"] == ib["data"] and a.nbytes == b.nbytes and a.dtype == b.dtype)


class RedisStepLog(RedisConn):
    """The gradient log part of RedisStore: wants_log, stage_log, discard_log, appends, and
    fetching the entries a reader must replay."""

    chunk_bytes: int
    idempotency_ttl_s: int
    log_steps: int
    log_min_bytes: int
    stats: dict[str, int]
    _log_len: dict[str, tuple[int, str, int]]  # sid -> (version, incarnation, log length)

    def _note_log(self, sid: str, version: int, inc: str, length: int) -> None:
        """Remember the step log's length at this version: `commit` appends to the log
        only when it knows the length it appends to (else it writes a snapshot)."""
        if len(self._log_len) > 100_000:
            self._log_len.clear()
        self._log_len[sid] = (version, inc, length)

    async def _fetch_log(
        self, sid: str, entries: list[list[Any]]
    ) -> list[tuple[bytes, np.ndarray]] | None:
        """These log entries' records and gradients, in one pipeline, for the engine to
        replay; None when one is gone (a snapshot replaced the log meanwhile: read again)."""
        if not entries:
            return []
        calls: list[tuple[str, Sequence[Any]]] = []
        for token, n, *_ in entries:
            calls.append(("get", [keys.logrec_key(sid, token)]))
            calls += [("get", [keys.log_key(sid, token, c)]) for c in range(n)]
        raw = await self._pipelined(calls)
        if any(r is None for r in raw):
            return None
        steps, pos = [], 0
        for _, n, dtype, length, _ in entries:
            steps.append((raw[pos], decode(raw[pos + 1 : pos + 1 + n], dtype, length)))
            pos += 1 + n
        self.stats["log_replays"] += len(steps)
        return steps

    def wants_log(self, sid: str, version: int, state_bytes: int) -> bool:
        """True when a commit on `version` will append: the state is big enough and the
        log's length at that version is known (from our load or commit) and not full."""
        known = self._log_len.get(sid)
        return (
            known is not None
            and known[0] == version
            and known[2] + 1 < self.log_steps
            and state_bytes >= self.log_min_bytes
        )

    async def stage_log(self, sid: str, grad: np.ndarray) -> _Staged:
        """SET the gradient's chunks (EX pending) now; `append.lua` settles them."""
        token = keys.new_token()
        chunks = _grad_chunks(sid, token, grad, self.chunk_bytes)

        async def call() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in chunks.items():
                    pipe.set(key, value, ex=PENDING_TTL_S)
                await pipe.execute()

        await self._transient(call)
        return _Staged(token, list(chunks), grad)

    async def discard_log(self, sid: str, staged: Any) -> None:
        if isinstance(staged, _Staged):
            keys_ = staged.keys

            async def call() -> None:
                await self.client.unlink(*keys_)  # one hash tag: one slot, one command

            await self._transient(call)

    async def _append(
        self,
        sid: str,
        expected_version: int,
        known: tuple[int, str, int],
        meta: bytes,
        slots: Mapping[str, np.ndarray],
        log: StepLog,
        idempotency: IdempotencyRecord | None,
        ttl_s: int | None,
        unlock: str | None,
    ) -> int:
        staged = log.staged if isinstance(log.staged, _Staged) else None
        if staged is not None and _same_memory(staged.grad, log.grad):
            token, grad_keys = staged.token, staged.keys  # already SET by stage_log
            self.stats["log_staged"] += 1
            chunks = {keys.logrec_key(sid, token): memoryview(log.record)}
        else:
            token, grad_keys = keys.new_token(), []
            chunks = {keys.logrec_key(sid, token): memoryview(log.record)}
            chunks |= _grad_chunks(sid, token, log.grad, self.chunk_bytes)
        _, dtype, raw = encode(log.grad)
        nchunks = max(1, -(-len(raw) // self.chunk_bytes))
        klist, record = [keys.meta_key(sid), *chunks, *grad_keys], b""
        if idempotency is not None:
            klist.append(keys.idem_key(sid, idempotency.key, idempotency.scope))
            record = keys.idempotency_arg(idempotency)
        entry = json.dumps([token, nchunks, dtype, log.grad.size, len(raw)])
        args = [expected_version, ttl_s or 0, record, self.idempotency_ttl_s, meta, token]
        args += [entry, known[1], unlock or ""]
        reply = await self._write("append", chunks, klist, args, inline=True, staged=len(grad_keys))
        version, inc = self._committed(sid, reply, expected_version, idempotency)
        # the step's arrays are the new state: cached as they are (the store's now)
        owned = {n: encode(a)[0] for n, a in slots.items()}
        self._cache.put(sid, Entry(version, inc, owned, True, meta))
        self._note_log(sid, version, inc, known[2] + 1)
        self.stats["log_appends"] += 1
        return version
