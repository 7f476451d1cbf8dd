"""The workers of a sync session (elastic rounds, DESIGN §4): join or heartbeat, leave,
list. A member is live while it was heard from within `worker_lease_s` (a join or
heartbeat, a step, or a params read naming itself in `Optd-Worker`); the round closes
as soon as every live member has contributed (`quorum.py`). Each of these calls also
closes the open round when the quorum allows it, so a round whose timeout ran out while
no contributor was waiting closes at the next sign of life.
"""

from __future__ import annotations

import time
from typing import Any

from app.core.auth import Caller
from app.engine.meta import SessionMeta
from app.engine.rounds import Rounds, member_ttl
from app.engine.txn import Transactions
from app.problems import InvalidBody, InvalidConfig

MAX_WORKER_CHARS = 256


def check_worker(worker: str) -> str:
    if not worker or len(worker) > MAX_WORKER_CHARS:
        raise InvalidBody(f"a worker id is 1 to {MAX_WORKER_CHARS} characters")
    return worker


class Members:
    def __init__(self, txn: Transactions, rounds: Rounds) -> None:
        self.txn = txn
        self.rounds = rounds

    async def _sync_session(self, sid: str, caller: Caller) -> tuple[int, SessionMeta]:
        cur = await self.txn.read(sid, caller, [])
        if cur.meta.options.mode != "sync":
            raise InvalidConfig(
                "workers join sync sessions only (`mode: sync`); this session is async"
            )
        return cur.version, cur.meta

    async def join(self, sid: str, caller: Caller, worker: str) -> dict[str, Any]:
        """Join, or renew the lease: the version to compute on is the round to join."""
        check_worker(worker)
        version, meta = await self._sync_session(sid, caller)
        await self.txn.store.member_touch(sid, worker, time.time(), None, member_ttl(meta))
        await self.rounds.maybe_close(sid, caller, meta, version)
        version = await self.txn.version(sid)
        st = await self.rounds.status(sid, meta, version)
        return {
            "worker": worker,
            "version": version,
            "round": st.public(),
            "lease_s": meta.options.worker_lease_s,
        }

    async def leave(self, sid: str, caller: Caller, worker: str) -> None:
        check_worker(worker)
        version, meta = await self._sync_session(sid, caller)
        await self.txn.store.member_leave(sid, worker)
        # the leaver may have been the one every other member waited for
        await self.rounds.maybe_close(sid, caller, meta, version)

    async def seen(self, sid: str, meta: SessionMeta, worker: str) -> None:
        """A params read naming its worker renews that worker's lease (sync sessions)."""
        if meta.options.mode == "sync" and worker:
            await self.txn.store.member_touch(sid, worker, time.time(), None, member_ttl(meta))

    async def list(self, sid: str, caller: Caller) -> dict[str, Any]:
        version, meta = await self._sync_session(sid, caller)
        await self.rounds.maybe_close(sid, caller, meta, version)
        version = await self.txn.version(sid)
        members = await self.txn.store.members(sid)
        lease, now = meta.options.worker_lease_s, time.time()
        workers = [
            {
                "worker": w,
                "live": lease is None or now - m.last_seen <= lease,
                "last_seen_s": round(max(0.0, now - m.last_seen), 3),
                "rounds": m.rounds,
                "last_version": m.last_version,
            }
            for w, m in sorted(members.items())
        ]
        st = await self.rounds.status(sid, meta, version)
        return {"workers": workers, "round": st.public(), "lease_s": lease}
