"""The first phase of a sharded session's step (DESIGN §3): a shard's part of the
gradient, checked like a step's and kept in this process's memory until its commit.

`prepare` answers the part's chunked squared norms (`sumsq`) and the shard's version;
the client sums every shard's list into the global norm and commits each shard with it.
Parts live here, not in the store: a part is as big as the gradient it is, and a lost
one costs the client one prepare again (409 `prepare-expired`), never a wrong step.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.auth import Caller
from app.engine.meta import SessionMeta
from app.engine.quotas import state_bytes
from app.engine.txn import Transactions
from app.optim import assemble_grads
from app.optim.step import contiguous_grads, grad_sumsq, norm_checked
from app.problems import Conflict, InvalidBody, PrepareExpired


@dataclass
class Part:
    sid: str
    tenant: str | None
    flat: np.ndarray  # the gradient in the shard's flat layout (read-only from here on)
    stepped: np.ndarray
    expires: float
    # the store writing `flat` as a log entry's chunks since the prepare (stage_log), for
    # the commit to settle; single use: a commit attempt that loses its compare-and-set
    # unlinks the chunks (lua/append.lua)
    staging: asyncio.Future[Any] | None = None


class Prepared:
    """Parts by token, oldest first, at most `max_bytes` of them (the oldest go first)."""

    def __init__(self, ttl_s: float, max_bytes: int) -> None:
        self.ttl_s, self.max_bytes = ttl_s, max_bytes
        self._parts: OrderedDict[str, Part] = OrderedDict()
        self._bytes = 0

    def put(
        self,
        sid: str,
        tenant: str | None,
        flat: np.ndarray,
        stepped: np.ndarray,
        staging: asyncio.Future[Any] | None = None,
    ) -> str:
        self._expire()
        token = secrets.token_urlsafe(16)
        flat.flags.writeable = False
        expires = time.monotonic() + self.ttl_s
        self._parts[token] = Part(sid, tenant, flat, stepped, expires, staging)
        self._bytes += flat.nbytes
        while self._bytes > self.max_bytes and len(self._parts) > 1:
            self._pop(next(iter(self._parts)))
        return token

    def get(self, token: str, sid: str, tenant: str | None) -> Part:
        self._expire()
        part = self._parts.get(token)
        if part is None or part.sid != sid or part.tenant != tenant:
            raise PrepareExpired(
                f"prepared part {token[:32]!r} is not held by this process for session {sid!r} "
                "(it expired, or the shard's owner changed): POST .../prepare again and "
                "commit with the same sumsq and If-Match"
            )
        return part

    def drop(self, token: str) -> None:
        if token in self._parts:
            self._pop(token)

    def _pop(self, token: str) -> None:
        self._bytes -= self._parts.pop(token).flat.nbytes

    def _expire(self) -> None:
        now = time.monotonic()
        while self._parts:
            token, part = next(iter(self._parts.items()))
            if part.expires > now:
                break
            self._pop(token)


def _check(meta: SessionMeta, sid: str) -> None:
    if (meta.options.shards or 1) > 1:
        raise Conflict(
            f"session {sid!r} is sharded: prepare and commit each shard session "
            f"({sid}-s0 ...; GET the session for the ranges, DESIGN §3)"
        )
    if meta.options.mode != "async":
        raise Conflict("prepare and commit apply to mode 'async' sessions only")


def _sumsq(flat: np.ndarray, meta: SessionMeta, stepped: np.ndarray) -> list[float]:
    cfg = meta.config.resolve()
    sumsq = grad_sumsq(meta.layout, flat, stepped)
    norm_checked(cfg, meta.layout, flat, stepped, sumsq)  # NaN with check_finite: 422
    return sumsq


async def prepare(
    txn: Transactions,
    parts: Prepared,
    sid: str,
    caller: Caller,
    grads: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    cur = await txn.read(sid, caller, [])
    meta = cur.meta
    _check(meta, sid)
    dtype = meta.config.resolve().dtype
    view = contiguous_grads(meta.layout, grads, dtype)  # the body as one array: no copy
    if view is not None:
        flat, stepped = view, np.arange(len(meta.layout.specs), dtype=np.int64)
    elif not grads and meta.options.shard_of is not None:
        # a step with no gradient for this shard: it still commits, so every shard's
        # version and step count (the schedule's) advance together
        flat, stepped = np.zeros(meta.layout.total, dtype), np.empty(0, np.int64)
    else:
        flat, stepped = assemble_grads(meta.layout, grads, dtype)
    sumsq = await txn.compute(meta.layout.total, _sumsq, flat, meta, stepped)
    staging = None
    if txn.store.wants_log(sid, cur.version, state_bytes(meta)):
        # the commit will keep this gradient as a log entry: write it while the client
        # gathers the other shards' answers (a step overlaps it with its compute)
        staging = asyncio.ensure_future(txn.store.stage_log(sid, flat))
    token = parts.put(sid, meta.tenant, flat, stepped, staging)
    return {"prepared": token, "version": cur.version, "sumsq": [wire(x) for x in sumsq]}


def wire(x: float) -> float | str:
    """A float as JSON: a number, or "NaN" / "Infinity" / "-Infinity"."""
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def parse_sumsq(value: Any) -> list[float]:
    """A commit's `sumsq`: numbers and the words `wire` writes, nothing else."""
    if not isinstance(value, list) or not value:
        raise InvalidBody("sumsq must be a non-empty list: every shard's prepare answer, in order")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float, str)):
            raise InvalidBody(f"sumsq: {x!r} is not a number")
        if isinstance(x, str):
            if x not in _WORDS:
                raise InvalidBody(f"sumsq: {x!r} is not a number (or NaN/Infinity)")
            out.append(_WORDS[x])
        else:
            out.append(float(x))
    return out
