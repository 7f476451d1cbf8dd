"""Async steps (DESIGN §4 `mode: "async"`): a step is applied on arrival, atomically.

A step is one `Transactions.write`: its body checks staleness, runs the math
(`execute`), and hands the new state to the commit (a compare-and-set on the version),
so any number of API processes may serve one session. Steps are optimistic: a process
that committed the session last starts from its own copy (no read), and the commit
finds out if anyone moved on. A sync-mode session is handed back untouched: the round
(`rounds.py`) decides what happens to the gradient.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

import orjson

from app.core.auth import Caller
from app.engine import execute
from app.engine.claims import Claim
from app.engine.history import History, point
from app.engine.meta import SessionMeta
from app.engine.prepared import Prepared
from app.engine.txn import Commit, Loaded, Skip, Transactions
from app.engine.types import StepOutcome, StepRequest
from app.optim import PARAM, StepInfo
from app.optim.step import contiguous_grads, norm_of
from app.problems import Conflict, IdempotencyMismatch, InvalidTensor, StaleGradient
from app.store.base import IdempotencyRecord, StepLog


class Steps:
    def __init__(self, txn: Transactions, parts: Prepared) -> None:
        self.txn = txn
        self.parts = parts  # a sharded session's prepared parts (DESIGN §3)
        self.history = History(txn)
        self._background: set[asyncio.Future[None]] = set()

    async def apply(
        self,
        sid: str,
        caller: Caller,
        req: StepRequest,
        *,
        if_match: int | None,
        claim: Claim | None,
    ) -> StepOutcome | Loaded:
        """Apply one step; a sync-mode session comes back as it was loaded (`Loaded`)."""
        txn, metrics = self.txn, self.txn.metrics
        tenant: list[str | None] = [None]  # the session's (an admin may step for a tenant)
        keep: list[bool] = [True]  # a history point (a shard session: shard 0's only)

        async def body(cur: Loaded) -> Commit[StepOutcome | Loaded] | Skip[StepOutcome | Loaded]:
            tenant[0] = cur.meta.tenant
            keep[0] = not cur.meta.options.shard_index
            if (cur.meta.options.shards or 1) > 1:
                raise Conflict(
                    f"session {sid!r} is sharded: prepare and commit each shard session "
                    f"({sid}-s0 ...; GET the session for the ranges, DESIGN §3)"
                )
            if cur.meta.options.mode == "sync":
                return Skip(cur)
            return await self._compute(sid, cur, req, claim)

        def usable(cur: Loaded) -> bool:
            """Can an optimistic step go on with this cached state? It must hold every
            slot the optimizer needs, and a base_version beyond it is checked with the
            store (the cache may just be behind)."""
            needed = {PARAM, *cur.meta.config.resolve().slot_names()}
            if not needed <= cur.slots.keys():
                return False
            return req.base_version is None or req.base_version <= cur.version

        version, out = await txn.write(
            sid, caller, body, if_match=if_match, optimistic=True, usable=usable
        )
        if isinstance(out, StepOutcome) and keep[0]:
            out.version = version
            metrics.steps.inc()
            if out.staleness is not None:
                metrics.staleness.observe(out.staleness)
            p = point(
                version,
                lr=out.lr,
                grad_norm=out.grad_norm,
                loss=req.loss,
                staleness=out.staleness,
                worker=req.worker,
            )
            await self.history.record(sid, p, tenant[0])
        elif isinstance(out, StepOutcome):
            out.version = version
            metrics.steps.inc()
        return out

    async def _compute(
        self, sid: str, cur: Loaded, req: StepRequest, claim: Claim | None
    ) -> Commit[StepOutcome | Loaded]:
        txn, meta = self.txn, cur.meta
        staleness = self._staleness(meta, cur.version, req.base_version)
        scale = 1.0
        if staleness and meta.options.staleness_lr == "inverse":
            scale = 1.0 / (1 + staleness)
        nbytes = sum(a.nbytes for a in cur.slots.values())
        log = txn.store.wants_log(sid, cur.version, nbytes)
        t0 = time.perf_counter()
        if req.prepared is not None:
            info, entry = await self._commit_part(sid, cur, req, scale, log)
        else:
            info, entry = await self._run(sid, cur, req, scale, log)
        txn.metrics.phase("compute", time.perf_counter() - t0)
        meta.step = info.step
        meta.last_lr, meta.last_grad_norm = info.lr, info.grad_norm
        if req.tokens is not None and meta.options.shard_index == 0:
            meta.last_shard_step = {
                "version": cur.version + 1,
                "tokens": req.tokens,
                "sumsq": req.sumsq,
                **({"loss": req.loss} if req.loss is not None else {}),
                **({"worker": req.worker} if req.worker is not None else {}),
            }
        if req.loss is not None:
            meta.last_loss = req.loss
        meta.updated_at = time.time()
        outcome = StepOutcome(
            cur.version + 1, info.step, info.lr, info.grad_norm, staleness, info.updated
        )
        record = None
        if claim is not None:  # the commit replaces the claim with the record, atomically
            record = claim.record(
                orjson.dumps({**outcome.summary(), "updated": list(info.updated)})
            )
        state = meta.state(cur.slots)
        outcome.params = {s.name: state.view(PARAM, s.name) for s in meta.layout.specs}
        return Commit(meta, state.slots, outcome, record, entry)

    async def _run(
        self, sid: str, cur: Loaded, req: StepRequest, scale: float, log: bool
    ) -> tuple[StepInfo, StepLog | None]:
        txn, meta = self.txn, cur.meta
        cfg = meta.config.resolve()
        state = meta.state(cur.slots)
        view = contiguous_grads(meta.layout, req.grads, cfg.dtype)
        # the log keeps a flat gradient as it is: start writing it now, while the step computes
        staging = None
        if log and view is not None:
            staging = asyncio.ensure_future(txn.store.stage_log(sid, view))
        try:
            info, entry = await txn.compute(
                meta.layout.total,
                execute.execute_grads,
                cfg,
                meta,
                state,
                req.grads,
                scale,
                log,
                view,
            )
        except BaseException:
            if staging is not None:  # a refused step: its staged gradient goes now
                self._discard_soon(sid, staging)
            raise
        if staging is not None and entry is not None:
            with contextlib.suppress(Exception):  # else the commit sends the gradient itself
                entry.staged = await staging
        return info, entry

    async def _commit_part(
        self, sid: str, cur: Loaded, req: StepRequest, scale: float, log: bool
    ) -> tuple[StepInfo, StepLog | None]:
        """A shard's commit: its prepared part, with the global norm of every shard's
        `sumsq` (the part is kept read-only: a lost compare-and-set runs this again)."""
        assert req.prepared is not None and req.sumsq is not None
        meta = cur.meta
        part = self.parts.get(req.prepared, sid, meta.tenant)
        cfg = meta.config.resolve()
        norm = norm_of(req.sumsq)
        if not math.isfinite(norm):
            # whatever check_finite says: whether a non-finite gradient would make some
            # shard's state non-finite (refused there after shard 0 applied it) cannot be
            # known here, so every shard refuses it, shard 0 first (DESIGN §3)
            raise InvalidTensor(
                "sumsq: the gradient holds NaN or Inf, or its squares overflow; a sharded "
                "session refuses such a step on every shard and nothing was applied (check "
                "the loss, or lower the learning rate)"
            )
        state = meta.state(cur.slots)
        staging, part.staging = part.staging, None  # single use (see prepared.Part)
        try:
            info, entry = await self.txn.compute(
                meta.layout.total,
                execute.execute,
                cfg,
                meta,
                state,
                part.flat.copy(),  # scratch: clipping and the update write into it
                part.stepped,
                scale,
                log,
                part.flat,
                norm,
            )
        except BaseException:
            if staging is not None:
                self._discard_soon(sid, staging)
            raise
        if staging is not None:
            if entry is None:
                self._discard_soon(sid, staging)
            else:
                with contextlib.suppress(Exception):  # else the commit sends it itself
                    entry.staged = await staging
        return info, entry

    def _discard_soon(self, sid: str, staging: asyncio.Future[Any]) -> None:
        task = asyncio.ensure_future(self._discard(sid, staging))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _discard(self, sid: str, staging: asyncio.Future[Any]) -> None:
        with contextlib.suppress(Exception):
            await self.txn.store.discard_log(sid, await staging)

    def _staleness(self, meta: SessionMeta, version: int, base: int | None) -> int | None:
        if base is None:
            return None
        if base > version:
            raise Conflict(
                f"base_version {base} is ahead of the session's version {version}",
                current_version=version,
            )
        staleness = version - base
        limit = meta.options.max_staleness
        if limit is not None and staleness > limit:
            self.txn.metrics.stale.inc()
            raise StaleGradient(
                f"gradient computed on version {base} is {staleness} versions behind "
                f"(max_staleness {limit}); fetch the params and recompute",
                current_version=version,
                staleness=staleness,
            )
        return staleness

    async def replayed(
        self, sid: str, caller: Caller, record: IdempotencyRecord, fingerprint: str
    ) -> StepOutcome:
        """The answer to a retried step whose first try committed (Idempotency-Key).

        The parameters can only be today's (older states are gone), so the answer is about
        today: `version`, `step`, `lr`, `grad_norm` of the session's state now (a client
        that takes `version` as the base of its next gradient is right), and the replayed
        step's own figures under `replayed`. While the session has not moved on, the two
        agree and the answer equals the first one (plus `replayed`)."""
        if record.fingerprint != fingerprint:
            raise IdempotencyMismatch(
                f"Idempotency-Key {record.key!r} was used for another request body; use a new key"
            )
        d = orjson.loads(record.response)
        first = {k: d[k] for k in ("version", "step", "lr", "grad_norm", "staleness")}
        cur = await self.txn.read(sid, caller, [PARAM])
        meta = cur.meta
        state = meta.state(cur.slots)
        params = {s.name: state.view(PARAM, s.name) for s in meta.layout.specs}
        updated = tuple(d["updated"])
        if cur.version == first["version"]:
            now = (first["step"], first["lr"], first["grad_norm"], first["staleness"])
        else:  # the last step's figures; this answer applied nothing, so no staleness
            now = (meta.step, meta.last_lr, meta.last_grad_norm, None)
        return StepOutcome(cur.version, *now, updated, params, replayed=first)
