"""A session's history (issue #19): a point per committed step or round, for the
dashboard at /ui and `GET .../history`.

The engine appends the point after the commit succeeded, in a separate store call (not
inside the commit script): history is an observation of the training, not part of the
state, so a point lost to a crash between the commit and the append costs a dot on a
chart, never a step. A failed append is logged and the step is still answered: it is
already applied and durable.

History counts in the tenant's `max_state_bytes` (DESIGN §8): the store keeps the bytes
a session's points hold and charges their high-water mark in blocks of `CHARGE_BLOCK`,
after the point is kept. The charge never refuses: a training run is not stopped by its
own chart, but its history counts against creating and growing sessions, and it goes
back when the session is deleted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from app.core.auth import Caller
from app.engine import quotas
from app.engine.txn import Transactions

log = logging.getLogger("optd.history")
MAX_LIMIT = 20_000  # a page: the recent window and the tail together fit in one
CHARGE_BLOCK = 4096  # ~15 steps' points: one quota update per block, not per step


def point(
    version: int,
    *,
    lr: float | None,
    grad_norm: float | None,
    loss: float | None = None,
    staleness: int | None = None,
    worker: str | None = None,
    contributors: list[str] | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {"version": version, "t": round(time.time(), 3), "loss": loss}
    p |= {"lr": lr, "grad_norm": grad_norm, "staleness": staleness, "worker": worker}
    if contributors is not None:
        p["contributors"] = contributors
    return p


class History:
    def __init__(self, txn: Transactions) -> None:
        self.txn = txn

    async def record(self, sid: str, p: dict[str, Any], tenant: str | None) -> None:
        cap = self.txn.settings.history_points
        if cap <= 0:
            return
        try:
            due = await self.txn.store.history_append(
                sid, int(p["version"]), orjson.dumps(p), cap, CHARGE_BLOCK
            )
            if due > 0:  # never refused (no limits passed): see the module's docstring
                await quotas.charge(self.txn, Caller(None), tenant, 0, due)
        except Exception as exc:  # noqa: BLE001 - the step is applied; say so and go on
            log.warning("history point %s of session %s not kept: %s", p["version"], sid, exc)

    async def page(self, sid: str, caller: Caller, since: int, limit: int) -> dict[str, Any]:
        """Points after `since` (oldest first) and where to continue; 404 for a session
        the caller may not see."""
        cur = await self.txn.read(sid, caller, [])
        got = await self.txn.store.history_read(sid, since, min(limit, MAX_LIMIT))
        points = [orjson.loads(b) for b in got.points]
        last = points[-1]["version"] if points else since
        return {
            "id": sid,
            "version": cur.version,
            "points": points,
            "next_since": max(last, since),
            "more": len(points) >= min(limit, MAX_LIMIT),
            "stride": got.stride,
            "recent_from": got.recent_from,
        }
