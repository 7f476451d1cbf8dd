"""A session's history on Redis (issue #19): two sorted sets by version and a stride,
under the session's hash tag (one cluster slot); the algorithm is `history.py`'s."""

from __future__ import annotations

from typing import Any

from app.store import keys
from app.store.history import HistoryPage
from app.store.redis_conn import RedisConn


class RedisHistory(RedisConn):
    HISTORY_SCRIPTS = ("history_add", "history_read")

    async def history_append(
        self, sid: str, version: int, point: bytes, cap: int, block: int
    ) -> int:
        hk = [keys.meta_key(sid), *keys.history_keys(sid)]
        due = await self._run("history_add", hk, [version, point, cap, block])
        return max(int(due), 0)  # -1: the session is gone

    async def history_charged(self, sid: str) -> int:
        async def call() -> Any:
            return await self.client.hget(keys.history_keys(sid)[3], "charged")

        return int(await self._transient(call) or 0)

    async def history_read(self, sid: str, since: int, limit: int) -> HistoryPage:
        stride, start, points = await self._run(
            "history_read", list(keys.history_keys(sid)), [since, limit]
        )
        start = int(start)
        return HistoryPage(list(points), int(stride), None if start < 0 else start)
