"""Sync mode (DESIGN §4): N workers' gradients for one version, averaged, applied once.

A round is the set of gradients sent for `base_version` = the session's version. Each
contribution is stored in the store under (session, version, worker), so any API
process may receive any worker. The request that brings the round to N closes it:
it averages the contributions and commits one step with the usual compare-and-set on
the version. Every waiting request then sees the version move and answers with the
same new parameters. A request that waited in vain gets 202 with the round's status;
`GET .../params?min_version=` picks up the result later.

The mean is exact and order-fixed: contributions (already in the state dtype) are
summed in float64 in worker-id order, divided by the number of contributions, and
converted to the state dtype, so N workers give the same bits as one worker sending
that mean. A parameter a worker did not send counts as a zero gradient from it (as
DDP treats unused parameters); parameters no worker sent are not stepped.

Elastic rounds (`min_workers`, `round_timeout_s`, `worker_lease_s`): when a round may
close early, and with whom, is `quorum.status`; members are tracked in the store
(`member_touch`). A round whose mean the optimizer refuses (a non-finite step) is
discarded, so the next contributions start it afresh instead of meeting the same 422.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from app.codec import safetensors
from app.core.auth import Caller
from app.engine import quorum
from app.engine.history import History, point
from app.engine.meta import SessionMeta
from app.engine.txn import Commit, Loaded, Skip, Transactions
from app.engine.types import BarrierPending, StepOutcome, StepRequest
from app.engine.wakeups import FALLBACK_S, Wakeups
from app.optim import PARAM, assemble_grads, run_step
from app.optim.state import TensorSpec
from app.problems import Conflict, InvalidBody, InvalidTensor, Problem, StaleGradient

STATUS_EVERY_S = 0.05  # elastic rounds: how often a waiter re-evaluates the quorum
RECOVER_AFTER_S = 1.0  # a ready round still open after this: its closer died, close it here
KEEP_RESULTS = 256  # sessions whose last round's result this process keeps for waiters
Closed = dict[str, Any]  # the history point of a round that closed
ROUND_TTL_S = 86_400  # an abandoned round's gradients expire (or with the session's TTL)


def _elastic(meta: SessionMeta) -> bool:
    o = meta.options
    return any(v is not None for v in (o.min_workers, o.round_timeout_s, o.worker_lease_s))


def member_ttl(meta: SessionMeta) -> int:
    return meta.options.ttl_s or ROUND_TTL_S


class Rounds:
    def __init__(self, txn: Transactions, max_wait_s: float, wakeups: Wakeups) -> None:
        self.txn = txn
        self.max_wait_s = max_wait_s
        self.wakeups = wakeups
        self._closed: OrderedDict[str, tuple[int, StepOutcome]] = OrderedDict()
        self.history = History(txn)

    async def status(self, sid: str, meta: SessionMeta, version: int) -> quorum.RoundStatus:
        """The open round on `version`: who contributed, who is missing, may it close."""
        store = self.txn.store
        workers, opened = await store.barrier_workers(sid, version)
        members = await store.members(sid) if meta.options.worker_lease_s is not None else {}
        return quorum.status(meta.options, version, workers, members, opened, time.time())

    async def contribute(
        self,
        sid: str,
        caller: Caller,
        cur: Loaded,
        req: StepRequest,
        wait: float,
    ) -> StepOutcome | BarrierPending:
        """Add the worker's gradient to the round on the session's version (`cur`: loaded
        by the step that found the session in sync mode, If-Match already checked; or this
        process's last view of it, `cached`, which the store's version check corrects),
        close the round if it may close, and wait up to `wait` s for it to close."""
        store, meta = self.txn.store, cur.meta
        if not req.worker:
            raise InvalidBody("sync mode: every step needs a worker id (`worker` / Optd-Worker)")
        version = cur.version
        base = version if req.base_version is None else req.base_version
        if base > version:
            raise Conflict(
                f"base_version {base} is ahead of the session's version {version}",
                current_version=version,
            )
        cfg = meta.config.resolve()
        flat, stepped = assemble_grads(meta.layout, req.grads, cfg.dtype)  # validates them
        for spec in _specs(meta, stepped):
            if not np.isfinite(flat[spec.offset : spec.offset + spec.size]).all():
                raise InvalidTensor(
                    f"grads: {spec.name!r} contains NaN or Inf; a sync round refuses it for "
                    "everyone",
                    errors=[{"loc": f"grads.{spec.name}", "msg": "non-finite value"}],
                )
        if base < version:
            return await self._late(sid, caller, req.worker, base, version)
        blob = safetensors.encode(
            {s.name: flat[s.offset : s.offset + s.size] for s in _specs(meta, stepped)},
            None if req.loss is None else {"loss": repr(req.loss)},  # the round's mean loss
        )
        ttl = member_ttl(meta)
        woken = self.wakeups.event(sid)  # before the add: a close after it sets this event
        try:  # the store adds it only while the session is at `base` (+ member_touch)
            have, _ = await store.barrier_add(sid, base, req.worker, blob, ttl)
        except Conflict as exc:
            if cur.cached:  # this process's view was behind: ask the store, once
                return await self.contribute(
                    sid, caller, await self.txn.read(sid, caller, []), req, wait
                )
            return await self._late(sid, caller, req.worker, base, exc.extra["current_version"])
        self._forget_result(sid, base)  # a round on `base` is open: any kept one is older
        elastic = _elastic(meta)
        need = meta.options.workers or 1
        ready = have >= need or (elastic and (await self.status(sid, meta, base)).ready)
        if ready:
            await self.close(sid, caller, base)
        deadline = time.monotonic() + min(wait, self.max_wait_s)
        ready_since = time.monotonic() if ready else None
        checked = time.monotonic()
        # Nothing to read before the first wait: the add saw the round open, and a close
        # since then has set `woken` (here, or through the listener from elsewhere).
        waited = False
        while True:
            if self.wakeups.seen(sid) > base or (waited and await self.txn.version(sid) > base):
                out = await self._result(sid, caller, base)
                if out is not None:
                    return out
            now = time.monotonic()
            if now >= deadline:
                st = await self.status(sid, meta, base)
                return BarrierPending(base, st.have, st.need, st.public())
            if ready_since is None:
                if elastic and now - checked >= STATUS_EVERY_S:
                    checked = now
                    if (await self.status(sid, meta, base)).ready:
                        await self.close(sid, caller, base)  # e.g. the timeout ran out
                        ready_since = now
                elif not elastic and waited and await store.barrier_count(sid, base) >= need:
                    ready_since = now  # full but open: its closer may have died
            elif now - ready_since > RECOVER_AFTER_S:
                await self.close(sid, caller, base)
                ready_since = now
            nap = min(FALLBACK_S, deadline - now)
            if elastic and ready_since is None:
                nap = min(nap, checked + STATUS_EVERY_S - now)
            await self.wakeups.wait(woken, nap)
            woken, waited = self.wakeups.event(sid), True  # the event before the next read

    async def maybe_close(self, sid: str, caller: Caller, meta: SessionMeta, version: int) -> None:
        """Close the open round if the quorum allows it now (a heartbeat or a listing
        notices a timeout that ran out while no contributor was waiting)."""
        if meta.options.mode == "sync" and (await self.status(sid, meta, version)).ready:
            await self.close(sid, caller, version)

    async def close(self, sid: str, caller: Caller, base: int) -> None:
        """Average the round's contributions and commit them as one step on `base`. Safe
        to call from many processes at once: the version compare-and-set admits one, and
        a closer that finds the version moved on skips."""
        txn = self.txn
        committed: list[Any] = []  # the meta and state the commit wrote, for the waiters

        async def body(cur: Loaded) -> Commit[Closed | None] | Skip[Closed | None]:
            committed.clear()
            if cur.version != base:
                return Skip(None)
            contributions = await txn.store.barrier_get(sid, base)
            meta = cur.meta
            if _elastic(meta):
                st = await self.status(sid, meta, base)
                ready, missing = st.ready, st.missing
            else:
                ready, missing = len(contributions) >= (meta.options.workers or 1), []
            if not ready or not contributions:
                return Skip(None)
            # who was in it, kept with the result so its waiters need not ask the store
            meta.last_round = {"version": base, "contributors": sorted(contributions),
                               "missing": missing}  # fmt: skip
            cfg = meta.config.resolve()
            layout = meta.layout
            acc = np.zeros(layout.total, dtype=np.float64)
            touched = np.zeros(len(layout.specs), dtype=bool)
            losses: list[float] = []
            for worker in sorted(contributions):
                tensors, md = safetensors.decode(contributions[worker])
                if "loss" in md:
                    losses.append(float(md["loss"]))
                for name, arr in tensors.items():
                    i = layout.index[name]
                    spec = layout.specs[i]
                    acc[spec.offset : spec.offset + spec.size] += arr.reshape(-1)
                    touched[i] = True
            acc /= len(contributions)
            grad = acc.astype(cfg.dtype)
            stepped = np.flatnonzero(touched)
            state = meta.state(cur.slots)
            # Rounds always snapshot (no step log): the workers of a round read the result
            # while the next round may already be closing, and a reader behind a step log
            # replays it from the snapshot (8 workers at 1e6: 2x the CPU a round, measured).
            info = await txn.compute(layout.total, run_step, cfg, state, grad, stepped, meta.step)
            meta.step = info.step
            meta.last_lr, meta.last_grad_norm = info.lr, info.grad_norm
            meta.updated_at = time.time()
            committed.append(meta)
            committed.append(state)
            loss = sum(losses) / len(losses) if losses else None
            if loss is not None:
                meta.last_loss = loss
            p = point(
                base + 1,
                lr=info.lr,
                grad_norm=info.grad_norm,
                loss=loss,
                staleness=0,
                contributors=sorted(contributions),
            )
            return Commit(meta, state.slots, p)

        try:
            # optimistic: from this process's last commit when it is at `base` (the
            # compare-and-set on the version finds out if another process moved on)
            version, closed = await txn.write(
                sid, caller, body, optimistic=True, usable=lambda cur: cur.version == base
            )
        except Problem as exc:
            if exc.status == 422:
                # the mean itself is refused (e.g. it overflows): drop the round, or every
                # later gradient for this version would meet the same refusal
                await txn.store.barrier_clear(sid, base)
            raise
        if closed is not None:
            txn.metrics.steps.inc()
            meta, state = committed
            out = self._outcome(version, meta, state, base)
            # a copy: the next step on this process may take the committed arrays and
            # update them in place while a slow waiter still encodes this answer
            out.params = {n: a.copy() for n, a in out.params.items()}
            self._remember(sid, base, out)
            # The round's waiters everywhere, its history point, and the round before it
            # (no longer needed; this one stays for replays of its workers): three round
            # trips at once, since the closer's answer waits for them (and its worker is
            # needed for the next round).
            await asyncio.gather(
                self.wakeups.announce(sid, base + 1),
                self.history.record(sid, closed, meta.tenant),
                txn.store.barrier_clear(sid, base - 1) if base > 0 else asyncio.sleep(0),
            )

    def _remember(self, sid: str, base: int, out: StepOutcome) -> None:
        """Keep a round's result for this process's waiters on it (no store read for them);
        a few hundred sessions' last rounds at most (the arrays are the committed state's,
        which this process's cache holds anyway)."""
        self._closed.pop(sid, None)
        self._closed[sid] = (base, out)
        while len(self._closed) > KEEP_RESULTS:
            self._closed.popitem(last=False)

    def _outcome(self, version: int, meta: SessionMeta, state: Any, base: int) -> StepOutcome:
        names = tuple(s.name for s in meta.layout.specs)
        params = {n: state.view(PARAM, n) for n in names}
        lr, norm = meta.last_lr or 0.0, meta.last_grad_norm or 0.0
        out = StepOutcome(version, meta.step, lr, norm, 0, names, params)
        last = meta.last_round
        if version == base + 1 and last is not None and last.get("version") == base:
            # the round this worker was in: name who was in it
            out.contributors, out.missing = list(last["contributors"]), list(last["missing"])
        return out

    async def _late(
        self, sid: str, caller: Caller, worker: str, base: int, version: int
    ) -> StepOutcome:
        """The round on `base` is closed (the session is at `version`): the same worker
        asking again is a replay of its answer; anyone else is too late."""
        if base == version - 1:
            contributed, _ = await self.txn.store.barrier_workers(sid, base)
            if worker in contributed:
                out = await self._result(sid, caller, base)
                if out is not None:
                    return out
        raise StaleGradient(
            f"the sync round on version {base} is closed (the session is at {version}); "
            "fetch the params and send the gradient for the current version",
            current_version=version,
        )

    def _forget_result(self, sid: str, base: int) -> None:
        hit = self._closed.get(sid)
        if hit is not None and hit[0] >= base:  # a deleted incarnation's
            self._closed.pop(sid, None)

    def forget(self, sid: str) -> None:
        """The session was deleted here: its kept result and announced version go."""
        self._closed.pop(sid, None)
        self.wakeups.forget(sid)

    async def _result(self, sid: str, caller: Caller, base: int) -> StepOutcome | None:
        """The answer of the round on `base`; None if the session is not past it (the
        wake-up came from an older incarnation of the session: go on waiting)."""
        hit = self._closed.get(sid)
        if hit is not None and hit[0] == base and hit[1].version == base + 1:
            return hit[1]  # closed here: the caller's visibility was checked by its step
        cur = await self.txn.read(sid, caller, [PARAM])
        if cur.version <= base:
            return None
        meta = cur.meta
        out = self._outcome(cur.version, meta, meta.state(cur.slots), base)
        if cur.version == base + 1 and out.contributors is None:
            st = await self.status(sid, meta, base)  # closed by a server before `last_round`
            out.contributors, out.missing = st.contributors, st.missing
        return out


def _specs(meta: SessionMeta, stepped: np.ndarray) -> list[TensorSpec]:
    return [meta.layout.specs[i] for i in stepped]
