"""The embedded store's sync rounds, members, announcements and history (the same
semantics as the Redis store's lua/barrier_add.lua, its pub/sub channel and
lua/history_*.lua), as a mixin of `MemoryStore` over its per-session records."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator
from typing import Protocol

from app.problems import Conflict
from app.store.base import Member
from app.store.history import History, HistoryPage


class _Session(Protocol):
    """What this mixin keeps in the store's record of a session."""

    version: int
    barriers: dict[int, dict[str, bytes]]
    opened: dict[int, float]  # round -> first contribution
    members: dict[str, Member]
    history: History


class MemoryRounds:
    _listeners: list[asyncio.Queue[tuple[str, int]]]

    def _get(self, sid: str) -> _Session:  # the store's: NotFound if absent
        raise NotImplementedError

    def _find(self, sid: str) -> _Session | None:  # the store's: None if absent
        raise NotImplementedError

    async def barrier_add(
        self, sid: str, version: int, worker: str, blob: bytes, ttl_s: int
    ) -> tuple[int, bool]:
        sess = self._get(sid)
        if sess.version != version:
            raise Conflict(
                f"session {sid} is at version {sess.version}, not {version}",
                current_version=sess.version,
            )
        round_ = sess.barriers.setdefault(version, {})
        sess.opened.setdefault(version, time.time())
        added = worker not in round_
        if added:
            round_[worker] = bytes(blob)
        await self.member_touch(sid, worker, time.time(), version if added else None, ttl_s)
        return len(round_), added

    async def barrier_get(self, sid: str, version: int) -> dict[str, bytes]:
        return dict(self._get(sid).barriers.get(version, {}))

    async def barrier_count(self, sid: str, version: int) -> int:
        return len(self._get(sid).barriers.get(version, {}))

    async def barrier_clear(self, sid: str, version: int) -> None:
        sess = self._find(sid)
        if sess is not None:
            sess.barriers.pop(version, None)
            sess.opened.pop(version, None)

    async def barrier_workers(
        self, sid: str, version: int
    ) -> tuple[builtins.list[str], float | None]:
        sess = self._get(sid)
        return list(sess.barriers.get(version, {})), sess.opened.get(version)

    async def member_touch(
        self, sid: str, worker: str, now: float, contributed: int | None, ttl_s: int
    ) -> None:
        m = self._get(sid).members.setdefault(worker, Member(now))
        m.last_seen = now
        if contributed is not None:
            m.rounds += 1
            m.last_version = contributed

    async def announce(self, sid: str, version: int) -> None:
        for queue in self._listeners:
            queue.put_nowait((sid, version))

    async def announcements(self) -> AsyncIterator[tuple[str, int]]:
        queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    async def member_leave(self, sid: str, worker: str) -> bool:
        return self._get(sid).members.pop(worker, None) is not None

    async def members(self, sid: str) -> dict[str, Member]:
        return {
            w: Member(m.last_seen, m.rounds, m.last_version)
            for w, m in self._get(sid).members.items()
        }

    async def history_append(
        self, sid: str, version: int, point: bytes, cap: int, block: int
    ) -> int:
        sess = self._find(sid)  # a session deleted meanwhile keeps no history
        return sess.history.add(version, bytes(point), cap, block) if sess is not None else 0

    async def history_charged(self, sid: str) -> int:
        sess = self._find(sid)
        return sess.history.charged if sess is not None else 0

    async def history_read(self, sid: str, since: int, limit: int) -> HistoryPage:
        sess = self._find(sid)
        return (sess.history if sess is not None else History()).read(since, limit)
