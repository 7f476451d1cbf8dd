"""Sharded sessions (DESIGN §3): one session's flat layout split into K contiguous ranges,
each held by a shard session `{id}-s{k}` with its own version, owner and hash slot.

The session `{id}` keeps the configuration and the whole layout (no state). Its shard
sessions are ordinary sessions holding their pieces as 1-D tensors under the tensors'
own names, plus `shard_of`/`shard_index` in their options. A step is prepared and
committed by the client on each shard (`prepared.py`); this module plans the ranges,
creates, describes, reads (assembled at one version) and deletes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.auth import Caller
from app.engine import checkpoints, sessions
from app.engine.meta import SessionMeta
from app.engine.quotas import state_bytes
from app.engine.txn import Loaded, Transactions
from app.ids import new_sid, sid_for_key
from app.optim import Layout, parse_config
from app.optim.base import CHUNK
from app.problems import Conflict, InvalidConfig, InvalidTensor, NotFound

AGREE_S = 2.0  # a read waits at least this long for the shards to reach one version


@dataclass(frozen=True)
class Piece:
    name: str
    start: int  # element positions inside the tensor, flattened row-major
    stop: int


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # positions in the flat layout
    stop: int
    pieces: tuple[Piece, ...]


def shard_id(sid: str, k: int) -> str:
    return f"{sid}-s{k}"


def count(meta: SessionMeta) -> int:
    """How many shards the session has (1: not sharded)."""
    return meta.options.shards or 1


def plan(layout: Layout, k: int) -> list[Shard]:
    """K ranges cut at multiples of CHUNK (the norm's chunk grid), each cut the one
    nearest to an even split; 422 when the layout has fewer than K chunks."""
    allowed = list(range(CHUNK, layout.total, CHUNK))
    if len(allowed) < k - 1:
        raise InvalidConfig(
            f"shards: {k} needs at least {k} chunks of {CHUNK} parameters; this session has "
            f"{len(allowed) + 1}: use fewer shards (sharding pays for big sessions only)",
            errors=[{"loc": "shards", "msg": "too many shards for the layout"}],
        )
    cuts = [0]
    for j in range(1, k):
        target = j * layout.total / k
        lo = bisect.bisect_right(allowed, cuts[-1])  # strictly after the previous cut
        hi = len(allowed) - (k - 1 - j)  # leave one position for every later cut
        i = min(max(bisect.bisect_left(allowed, target, lo, hi), lo), hi - 1)
        if i > lo and abs(allowed[i - 1] - target) <= abs(allowed[i] - target):
            i -= 1
        cuts.append(allowed[i])
    cuts.append(layout.total)
    out = []
    for j in range(k):
        a, b = cuts[j], cuts[j + 1]
        pieces = tuple(
            Piece(s.name, max(a, s.offset) - s.offset, min(b, s.offset + s.size) - s.offset)
            for s in layout.specs
            if s.offset < b and s.offset + s.size > a
        )
        out.append(Shard(j, a, b, pieces))
    return out


def public(sid: str, shards: list[Shard], versions: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "id": shard_id(sid, s.index),
            "index": s.index,
            "start": s.start,
            "stop": s.stop,
            "version": v,
            "tensors": [{"name": p.name, "start": p.start, "stop": p.stop} for p in s.pieces],
        }
        for s, v in zip(shards, versions, strict=True)
    ]


async def create(
    txn: Transactions,
    caller: Caller,
    body: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    idempotency: tuple[str, str] | None,
) -> tuple[str, SessionMeta, bool]:
    """The shard sessions, then the session: a retry with the same Idempotency-Key finds
    what its first try created and makes the rest."""
    raw_config, options = sessions.split_body(body)
    k = count_of(options.shards)
    if options.ttl_s is not None:
        raise InvalidConfig("ttl_s: not yet with shards (a step does not renew the session)")
    config = parse_config(raw_config)
    meta, state = sessions.build(txn, caller, config, options, params)
    shards = plan(meta.layout, k)
    sid = new_sid()
    if idempotency is not None:
        sid = sid_for_key(idempotency[0], scope=caller.tenant or "")
        meta.create_fingerprint = idempotency[1]
    whole = state.slots["param"]
    made: list[str] = []
    try:
        for s in shards:
            part_opts = options.model_copy(
                update={"shards": None, "shard_of": sid, "shard_index": s.index}
            )
            pieces = {p.name: _piece(meta.layout, whole, p) for p in s.pieces}
            # the part is initialised from its pieces as any session is: optimizer state
            # is per element (or per tensor piece, identical for every piece), so it
            # equals the whole session's slice
            part, part_state = sessions.build(txn, caller, config, part_opts, pieces)
            part.create_fingerprint = meta.create_fingerprint
            if await sessions.store_new(
                txn, caller, shard_id(sid, s.index), part, part_state.slots, idempotency
            ):
                made.append(shard_id(sid, s.index))
        steps = np.zeros(len(meta.layout.specs), np.int64)
        parent = SessionMeta(config, options, meta.layout, steps, {})
        parent.tenant, parent.create_fingerprint = caller.tenant, meta.create_fingerprint
        created = await sessions.store_new(txn, caller, sid, parent, {}, idempotency)
    except BaseException:
        # a quota or the store refused one: the shards made here go (a retry makes them
        # again), so nothing is left behind that no session names
        for done in made:
            with contextlib.suppress(Exception):
                await sessions.delete(txn, done, caller)
        raise
    return sid, parent, not created


def count_of(n: int | None) -> int:
    return n or 1


def _piece(layout: Layout, flat: np.ndarray, p: Piece) -> np.ndarray:
    spec = layout.specs[layout.index[p.name]]
    return flat[spec.offset + p.start : spec.offset + p.stop]


async def _parts(txn: Transactions, sid: str, caller: Caller, k: int) -> list[Loaded]:
    return list(await asyncio.gather(*(txn.read(shard_id(sid, j), caller, []) for j in range(k))))


async def describe(
    txn: Transactions, sid: str, caller: Caller, meta: SessionMeta
) -> dict[str, Any]:
    """The session info of a sharded session: the layout's, with the shards' versions and
    shard 0's step, lr and loss."""
    k = count(meta)
    parts = await _parts(txn, sid, caller, k)
    shards = plan(meta.layout, k)
    first = sessions.describe(shard_id(sid, 0), parts[0].version, parts[0].meta)
    info = sessions.describe(sid, min(p.version for p in parts), meta)
    for key in ("step", "lr", "last_loss", "updated_at"):
        info[key] = first[key]
    steps: dict[str, int] = {}
    for s, p in zip(shards, parts, strict=True):
        for piece in s.pieces:
            steps.setdefault(piece.name, int(p.meta.steps[p.meta.layout.index[piece.name]]))
    info["params"] = {
        spec.name: {"shape": list(spec.shape), "step": steps[spec.name]}
        for spec in meta.layout.specs
    }
    info["state_bytes"] = sum(state_bytes(p.meta) for p in parts)
    info["shards"] = public(sid, shards, [p.version for p in parts])
    last = parts[0].meta.last_shard_step
    top = parts[0].version
    if last and last.get("version") == top and any(p.version == top - 1 for p in parts[1:]):
        # a step shard 0 took that some shards have not: what finishes it (DESIGN §3)
        info["repair"] = last
    return info


async def read_params(
    txn: Transactions,
    sid: str,
    caller: Caller,
    meta: SessionMeta,
    names: list[str] | None,
    min_version: int | None,
    wait: float,
) -> tuple[int, dict[str, np.ndarray]]:
    """Every shard's pieces at one version, assembled into whole tensors: shards behind
    the newest are waited for (a step between its commits), 409 if they never agree."""
    layout = meta.layout
    wanted = names if names else [s.name for s in layout.specs]
    unknown = [n for n in wanted if n not in layout.index]
    if unknown:
        raise InvalidTensor(f"names: unknown parameter(s) {unknown[:5]}")
    shards = [s for s in plan(layout, count(meta)) if any(p.name in wanted for p in s.pieces)]
    deadline = time.monotonic() + max(wait, AGREE_S)

    async def get(s: Shard, at: int | None, w: float) -> tuple[int, dict[str, np.ndarray]]:
        mine = [p.name for p in s.pieces if p.name in wanted]
        v, got, _ = await checkpoints.get_params(txn, shard_id(sid, s.index), caller, mine, at, w)
        return v, got

    got = list(await asyncio.gather(*(get(s, min_version, wait) for s in shards)))
    while True:
        top = max(v for v, _ in got)
        behind = [i for i, (v, _) in enumerate(got) if v != top]
        if not behind:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise Conflict(
                f"the shards of session {sid!r} are at versions {[v for v, _ in got]}: a step "
                "is between its commits; read again",
                retry_after=1,
            )
        again = await asyncio.gather(*(get(shards[i], top, left) for i in behind))
        for i, r in zip(behind, again, strict=True):
            got[i] = r
    out = {}
    for name in wanted:
        spec = layout.specs[layout.index[name]]
        buf = None
        for s, (_, part) in zip(shards, got, strict=True):
            for p in s.pieces:
                if p.name == name:
                    if buf is None:
                        buf = np.empty(spec.size, dtype=part[name].dtype)
                    buf[p.start : p.stop] = part[name]
        assert buf is not None
        out[name] = buf.reshape(spec.shape)
    return got[0][0], out


def ids(sid: str, meta: SessionMeta) -> list[str]:
    """The shard sessions' ids (none for a session that is not sharded)."""
    k = count(meta)
    return [shard_id(sid, j) for j in range(k)] if k > 1 else []


def refuse_whole(meta: SessionMeta, sid: str, what: str) -> None:
    """What a sharded session answers for operations on its state as a whole."""
    if count(meta) > 1:
        raise Conflict(
            f"{what} on sharded session {sid!r}: use its shard sessions "
            f"({', '.join(ids(sid, meta)[:4])}, DESIGN §3)"
        )


def refuse_part(meta: SessionMeta, sid: str, what: str) -> None:
    """What a shard session answers for operations that belong to its whole session."""
    if meta.options.shard_of is not None:
        raise Conflict(
            f"{what} on {sid!r}, shard {meta.options.shard_index} of session "
            f"{meta.options.shard_of!r}: {what} that session"
        )


async def patch(
    txn: Transactions, sid: str, caller: Caller, meta: SessionMeta, body: Mapping[str, Any]
) -> None:
    """PATCH the session (where a bad body is refused before any shard changes), then
    every shard session. Not atomic across shards: a step committed between two shards'
    PATCH would see two configurations, so PATCH a sharded session between steps; one
    refused halfway (a quota, the store) is finished by sending it again (DESIGN §3)."""
    if "ttl_s" in body:
        raise InvalidConfig("ttl_s: not yet with shards (a step does not renew the session)")
    await sessions.patch(txn, sid, caller, body, None)
    for part in ids(sid, meta):
        await sessions.patch(txn, part, caller, body, None)


async def delete_part(txn: Transactions, part: str, caller: Caller) -> None:
    """Delete a shard session; one already gone is fine (a DELETE again finishes one that
    failed halfway: the session itself goes last)."""
    with contextlib.suppress(NotFound):
        await sessions.delete(txn, part, caller)
