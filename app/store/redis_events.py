"""Announcements between API processes on Redis pub/sub: "session S reached version V".

A sync round's waiters in every process wake when its closer announces the new version,
instead of polling Redis every few milliseconds (issue #18, fast sync rounds). Pub/sub
is fire-and-forget: a waiter still re-reads the version on a slow timer, so a lost
announcement (a subscriber reconnecting, a cluster node failing over) costs latency,
never correctness. On Redis Cluster a classic PUBLISH reaches subscribers on every node.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from app.store import keys
from app.store.redis_conn import RedisConn

LISTEN_S = 1.0  # how long one read of the subscription blocks (then it loops)


class RedisEvents(RedisConn):
    async def announce(self, sid: str, version: int) -> None:
        with self._errors():
            await self.client.publish(keys.VERSIONS_CHANNEL, f"{sid} {version}")

    async def announcements(self) -> AsyncIterator[tuple[str, int]]:
        pubsub = self.client.pubsub()
        try:
            with self._errors():
                await pubsub.subscribe(keys.VERSIONS_CHANNEL)
            while True:
                with self._errors():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_S)
                if msg is None or msg.get("type") != "message":
                    continue
                sid, _, version = bytes(msg["data"]).decode().partition(" ")
                if version.isascii() and version.isdigit():
                    yield sid, int(version)
        finally:
            # the subscription is gone either way; a failing close must not mask why
            with contextlib.suppress(RedisError, OSError, RuntimeError, AttributeError):
                await pubsub.aclose()
