"""Owner leases in the embedded store (DESIGN §4 "Session owners"). One process holds the
embedded store, so it owns every session; the protocol is the Redis store's all the same."""

from __future__ import annotations

from collections.abc import Callable

from app.store import keys


class MemoryOwners:
    clock: Callable[[], float]

    def __init__(self) -> None:
        self._owners: dict[str, tuple[str, float]] = {}  # sid -> (holder, until)

    async def owner_claim(self, sid: str, me: str, ttl_ms: int) -> tuple[str, int]:
        keys.check_sid(sid)
        now = self.clock()
        holder, until = self._owners.get(sid, ("", 0.0))
        if not holder or until <= now or holder == me:
            if len(self._owners) > 10_000:  # forget lapsed leases now and then
                self._owners = {s: v for s, v in self._owners.items() if v[1] > now}
            self._owners[sid] = (me, now + ttl_ms / 1000)
            return me, ttl_ms
        return holder, max(0, int((until - now) * 1000))

    async def owner_release(self, sid: str, me: str) -> None:
        if self._owners.get(sid, ("", 0.0))[0] == me:
            del self._owners[sid]
