"""The embedded store's tenants: usage counters with their recount generation, and rate
buckets (the same semantics as lua/quota_*.lua and lua/rate_take.lua)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Usage:
    sessions: int = 0
    nbytes: int = 0
    gen: int = 0
    pending: int = 0
    pending_at: float = 0.0


class MemoryTenants:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._tenant_clock = clock
        self._usage: dict[str, _Usage] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    async def quota_add(
        self,
        tenant: str,
        sessions: int,
        nbytes: int,
        max_sessions: int | None,
        max_bytes: int | None,
        pending: int = 0,
    ) -> bool:
        use = self._usage.setdefault(tenant, _Usage())
        s, b = use.sessions + sessions, use.nbytes + nbytes
        if sessions > 0 or nbytes > 0:
            if (max_sessions is not None and s > max_sessions) or (
                max_bytes is not None and b > max_bytes
            ):
                return False
        use.sessions, use.nbytes, use.gen = max(s, 0), max(b, 0), use.gen + 1
        if pending:
            use.pending, use.pending_at = max(use.pending + pending, 0), self._tenant_clock()
        return True

    async def quota_gen(self, tenant: str, stale_ms: int) -> int | None:
        use = self._usage.setdefault(tenant, _Usage())
        if use.pending > 0 and self._tenant_clock() - use.pending_at < stale_ms / 1000:
            return None
        return use.gen

    async def quota_recount(self, tenant: str, gen: int, sessions: int, nbytes: int) -> bool:
        use = self._usage.setdefault(tenant, _Usage())
        if use.gen != gen:
            return False
        use.sessions, use.nbytes, use.pending, use.gen = sessions, nbytes, 0, gen + 1
        return True

    async def rate_take(self, tenant: str, rate: float, burst: float) -> float:
        now = time.monotonic()
        tokens, at = self._buckets.get(tenant, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens >= 1:
            self._buckets[tenant] = (tokens - 1, now)
            return 0.0
        self._buckets[tenant] = (tokens, now)
        return (1 - tokens) / rate
