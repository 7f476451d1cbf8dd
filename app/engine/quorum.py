"""When a sync round closes, and with whom (DESIGN §4 "Elastic rounds"): a pure rule.

With N = `workers`, k = `min_workers` (default N), T = `round_timeout_s`, L =
`worker_lease_s`, a round on version v that holds `have` distinct contributions closes
as soon as one of these holds:
  1. have >= N;
  2. have >= k and L is set and every live member has contributed (a member is live
     while it was heard from within L seconds: a join/heartbeat, a step, or a params read
     naming itself in `Optd-Worker`);
  3. have >= k and T is set and T seconds have passed since the round's first
     contribution.
With none of k, T, L set this is exactly "N contributions" (rule 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.engine.meta import SessionOptions
from app.store.base import Member


@dataclass
class RoundStatus:
    version: int
    have: int
    need: int  # N: a full round
    min: int  # k: enough to close early
    contributors: list[str]
    missing: list[str]  # live members who have not contributed (known members if no lease)
    closes_in_s: float | None  # the timeout's countdown, once the round has k contributions
    ready: bool

    def public(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "have": self.have,
            "need": self.need,
            "min": self.min,
            "contributors": self.contributors,
            "missing": self.missing,
            "closes_in_s": self.closes_in_s,
        }


def live_members(members: Mapping[str, Member], lease_s: float | None, now: float) -> set[str]:
    if lease_s is None:
        return set(members)
    return {w for w, m in members.items() if now - m.last_seen <= lease_s}


def status(
    options: SessionOptions,
    version: int,
    contributors: Iterable[str],
    members: Mapping[str, Member],
    opened: float | None,
    now: float,
) -> RoundStatus:
    need = options.workers or 1
    k = options.min_workers or need
    got = sorted(set(contributors))
    have = len(got)
    live = live_members(members, options.worker_lease_s, now)
    missing = sorted(live - set(got))
    ready = have >= need
    closes_in: float | None = None
    if not ready and have >= k:
        if options.worker_lease_s is not None and not missing:
            ready = True
        elif options.round_timeout_s is not None and opened is not None:
            closes_in = max(0.0, opened + options.round_timeout_s - now)
            ready = closes_in == 0.0
    return RoundStatus(version, have, need, k, got, missing, closes_in, ready)
