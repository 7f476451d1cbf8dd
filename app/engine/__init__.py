"""The engine: the service's use cases, between the HTTP face (`app.api`, `app.cli`) and
the parts below it (`app.optim` math, `app.codec` formats, `app.store` persistence).

`Engine` is the only thing the face imports from here. Every operation takes the caller
explicitly (the tenant a request authenticated as) and checks visibility in one place
(`Transactions._load`). Every change to a session is one `Transactions.write` (txn.py):
lock, load, If-Match, the change, a compare-and-set commit, one conflict policy.

    steps.py      async steps            rounds.py       sync rounds (never imports steps)
    sessions.py   create/describe/list/patch/delete     checkpoints.py  params and state
    execute.py    a step's math and the exact replay of a logged one
    meta.py       the session document the store keeps   types.py   requests and outcomes
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.core.auth import Caller
from app.core.config import Settings
from app.engine import checkpoints, prepared, service, sessions, shards
from app.engine.claims import Claim
from app.engine.members import Members
from app.engine.meta import SessionMeta
from app.engine.owners import Owners
from app.engine.prepared import Prepared, parse_sumsq
from app.engine.rounds import Rounds
from app.engine.steps import Steps
from app.engine.txn import Loaded, Transactions, check_if_match
from app.engine.types import DEFAULT_WAIT_S, BarrierPending, StepOutcome, StepRequest
from app.engine.wakeups import Wakeups
from app.metrics import Metrics
from app.optim import list_optimizers
from app.optim.schedules import SCHEDULE_NAMES
from app.problems import NotFound, PreconditionRequired
from app.store.base import SessionStore

__all__ = [
    "DEFAULT_WAIT_S",
    "parse_sumsq",
    "BarrierPending",
    "Caller",
    "Engine",
    "SessionStore",
    "StepOutcome",
    "StepRequest",
]


class Engine:
    def __init__(self, store: SessionStore, settings: Settings, metrics: Metrics) -> None:
        self.store = store  # for diagnostics and tests; the face goes through the methods
        self.settings = settings
        self.metrics = metrics
        self.txn = Transactions(store, settings, metrics)
        self.parts = Prepared(settings.prepare_ttl_s, int(settings.prepare_max_mb * 2**20))
        self._steps = Steps(self.txn, self.parts)
        self.wakeups = Wakeups(store)
        self._rounds = Rounds(self.txn, settings.max_wait_s, self.wakeups)
        self._members = Members(self.txn, self._rounds)
        self.owners = Owners(store, settings)  # who serves which session (the face asks)
        self._owns_store = False

    @classmethod
    async def open(
        cls, settings: Settings, metrics: Metrics, store: SessionStore | None = None
    ) -> Engine:
        """An engine on `store`, or on the store the settings name (opened here, closed by
        `close`); the store must answer (else `StoreUnavailable`: refuse to start)."""
        own = store is None
        s = store or service.configured_store(settings)
        try:
            await s.ping()
        except BaseException:
            if own:
                await s.close()
            raise
        engine = cls(s, settings, metrics)
        engine._owns_store = own
        return engine

    async def close(self) -> None:
        await self.owners.close()
        await self.wakeups.close()
        if self._owns_store:
            await self.store.close()

    @staticmethod
    async def check_store(settings: Settings) -> None:
        """Ping the configured store once (`optd serve` refuses to start without it)."""
        await service.check_store(settings)

    # --- the service ---

    async def ready(self) -> str:
        """The store's kind, or 503 when it does not answer in time (service.ready)."""
        return await service.ready(self.store, self.settings.ready_timeout_s)

    async def admit(self, caller: Caller) -> None:
        """Take one request from the caller's tenant's rate (429 when over it)."""
        await service.admit(self.store, caller)

    @staticmethod
    def optimizers() -> dict[str, Any]:
        """Every optimizer with its hyperparameter schema, and the schedules."""
        return {"optimizers": list_optimizers(), "schedules": list(SCHEDULE_NAMES)}

    # --- sessions ---

    async def create_session(
        self,
        caller: Caller,
        body: Mapping[str, Any],
        params: Mapping[str, np.ndarray],
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[str, int, dict[str, Any], bool]:
        """(id, version, session info, replayed): a retried create with the same
        Idempotency-Key finds the session its first try created."""
        if body.get("shards") not in (None, 1):
            sid, meta, replayed = await shards.create(self.txn, caller, body, params, idempotency)
            info = await shards.describe(self.txn, sid, caller, meta)
            return sid, info["version"], info, replayed
        sid, version, meta, replayed = await sessions.create(
            self.txn, caller, body, params, idempotency
        )
        return sid, version, sessions.describe(sid, version, meta), replayed

    async def list_sessions(
        self, caller: Caller, cursor: str | None, limit: int, label: list[str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await sessions.list_page(self.txn, caller, cursor, limit, label)

    async def describe_session(self, sid: str, caller: Caller) -> tuple[int, dict[str, Any]]:
        cur = await self.txn.read(sid, caller, [])
        if shards.count(cur.meta) > 1:
            info = await shards.describe(self.txn, sid, caller, cur.meta)
            return info["version"], info
        return cur.version, sessions.describe(sid, cur.version, cur.meta)

    async def patch_session(
        self, sid: str, caller: Caller, body: Mapping[str, Any], if_match: int | None
    ) -> tuple[int, dict[str, Any]]:
        meta = await self._meta(sid, caller)
        if shards.count(meta) > 1:  # every shard, then the session (between steps)
            await shards.patch(self.txn, sid, caller, meta, body)
            return await self.describe_session(sid, caller)
        shards.refuse_part(meta, sid, "PATCH")
        version, meta = await sessions.patch(self.txn, sid, caller, body, if_match)
        return version, sessions.describe(sid, version, meta)

    async def delete_session(self, sid: str, caller: Caller) -> None:
        meta = await self._meta(sid, caller)
        shards.refuse_part(meta, sid, "DELETE")
        for part in shards.ids(sid, meta):
            await shards.delete_part(self.txn, part, caller)
            self.owners.forget(part)
        await sessions.delete(self.txn, sid, caller)
        self._rounds.forget(sid)  # a session recreated under this id starts afresh here
        self.owners.forget(sid)

    # --- steps ---

    async def step(
        self,
        sid: str,
        caller: Caller,
        req: StepRequest,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        wait: float = DEFAULT_WAIT_S,
    ) -> StepOutcome | BarrierPending:
        if req.prepared is not None and if_match is None:
            raise PreconditionRequired(
                'a sharded step\'s commit needs If-Match: "<the version prepare answered>" '
                "(it orders the shards' steps, DESIGN §3)"
            )
        claim = None
        if idempotency_key is not None:
            claim = Claim(self.store, sid, caller, idempotency_key, fingerprint)
            record = await claim.take()
            if record is not None:
                return await self._steps.replayed(sid, caller, record, fingerprint)
        recorded = False
        try:
            view = self.txn.peek(sid, caller) if if_match is None else None
            if view is not None and view.meta.options.mode == "sync":
                # A contribution needs the meta and the version, not the state: this
                # process's view of them (no round trip; the store's add checks the
                # version), or the meta alone from the store when the worker's base
                # version says the view is behind.
                if req.base_version is not None and req.base_version != view.version:
                    view = await self.txn.read(sid, caller, [])
                if view.meta.options.mode == "sync":
                    return await self._rounds.contribute(sid, caller, view, req, wait)
            out = await self._steps.apply(sid, caller, req, if_match=if_match, claim=claim)
            if isinstance(out, Loaded):
                # a sync-mode session: the round decides (waiting happens outside the lock)
                if out.cached and if_match is not None:
                    # contribute() corrects a view that is behind, but not its If-Match
                    out = await self.txn.read(sid, caller, [])
                    check_if_match(if_match, out.version)
                return await self._rounds.contribute(sid, caller, out, req, wait)
            recorded = claim is not None
            if req.prepared is not None:
                self.parts.drop(req.prepared)
            return out
        finally:
            if claim is not None:
                # failed (or sync mode, where the worker id dedups): free the key now
                await claim.end(release=not recorded)

    async def prepare(
        self, sid: str, caller: Caller, grads: Mapping[str, np.ndarray]
    ) -> dict[str, Any]:
        """A sharded step's first phase on one shard session (DESIGN §3)."""
        return await prepared.prepare(self.txn, self.parts, sid, caller, grads)

    # --- the workers of a sync session (elastic rounds) ---

    async def join_worker(self, sid: str, caller: Caller, worker: str) -> dict[str, Any]:
        return await self._members.join(sid, caller, worker)

    async def leave_worker(self, sid: str, caller: Caller, worker: str) -> None:
        await self._members.leave(sid, caller, worker)

    async def list_workers(self, sid: str, caller: Caller) -> dict[str, Any]:
        return await self._members.list(sid, caller)

    # --- params and checkpoints ---

    async def get_params(
        self,
        sid: str,
        caller: Caller,
        names: list[str] | None = None,
        min_version: int | None = None,
        wait: float = 0.0,
        worker: str | None = None,
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Current params; `worker` (Optd-Worker) renews that worker's lease. A sharded
        session's are every shard's, assembled at one version."""
        meta = await self._meta(sid, caller)
        if shards.count(meta) > 1:
            return await shards.read_params(self.txn, sid, caller, meta, names, min_version, wait)
        version, params, meta = await checkpoints.get_params(
            self.txn, sid, caller, names, min_version, wait
        )
        if worker:
            await self._members.seen(sid, meta, worker)
        return version, params

    async def put_params(
        self,
        sid: str,
        caller: Caller,
        params: Mapping[str, np.ndarray],
        if_match: int | None = None,
    ) -> int:
        shards.refuse_whole(await self._meta(sid, caller), sid, "PUT .../params")
        return await checkpoints.put_params(self.txn, sid, caller, params, if_match)

    async def export_state(
        self, sid: str, caller: Caller
    ) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
        shards.refuse_whole(await self._meta(sid, caller), sid, "GET .../state")
        return await checkpoints.export_state(self.txn, sid, caller)

    async def import_state(
        self,
        sid: str,
        caller: Caller,
        doc: Any,
        tensors: Mapping[str, np.ndarray],
        if_match: int | None = None,
    ) -> tuple[int, bool]:
        with contextlib.suppress(NotFound):  # PUT state may create the session
            shards.refuse_whole(await self._meta(sid, caller), sid, "PUT .../state")
        return await checkpoints.import_state(self.txn, sid, caller, doc, tensors, if_match)

    # --- history (issue #19) ---

    async def history(self, sid: str, caller: Caller, since: int, limit: int) -> dict[str, Any]:
        """A page of the session's history points after version `since`."""
        return await self._steps.history.page(
            await self.history_of(sid, caller), caller, since, limit
        )

    async def history_of(self, sid: str, caller: Caller) -> str:
        """Whose points a session's history is: a sharded session's are shard 0's."""
        meta = await self._meta(sid, caller)
        return shards.shard_id(sid, 0) if shards.count(meta) > 1 else sid

    async def _meta(self, sid: str, caller: Caller) -> SessionMeta:
        """The session's meta, from this process's view when it has one (what is asked of
        it here, sharded or not, never changes), else read (404 for another tenant's)."""
        view = self.txn.peek(sid, caller)
        return view.meta if view is not None else (await self.txn.read(sid, caller, [])).meta
