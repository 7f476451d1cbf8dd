"""Waiting for a session's version to move, without polling the store (issue #18).

A sync round's contributors wait for the round to close. The request that closes it
notifies this process's waiters at once and announces the new version through the store
(Redis pub/sub), and one listener task per process turns other processes' announcements
into the same local wake-ups. Announcements are best effort, so a waiter still re-reads
the version after `FALLBACK_S` without one: a lost message costs latency, not a result.

Use: take the `event` *before* reading the version, then `wait` on it; a notification
that lands between the read and the wait has already set that event, so it is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.store.base import SessionStore

FALLBACK_S = 0.1  # re-read the version this often when no announcement arrives
RESUBSCRIBE_S = 1.0  # after the subscription broke (Redis restarting, failover)

log = logging.getLogger("optd")


class Wakeups:
    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self._events: dict[str, asyncio.Event] = {}
        self._seen: dict[str, int] = {}  # the highest version announced per session
        self._listener: asyncio.Task[None] | None = None

    def event(self, sid: str) -> asyncio.Event:
        """The event the next notification of `sid` sets (shared by its waiters)."""
        self._listen()
        ev = self._events.get(sid)
        if ev is None:
            ev = self._events[sid] = asyncio.Event()
        return ev

    async def wait(self, ev: asyncio.Event, timeout: float) -> None:
        """Until `ev` is set or `timeout` s pass (then the caller re-reads the version)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await ev.wait()

    def seen(self, sid: str) -> int:
        """The highest version announced for `sid` (-1: none). A hint to skip a read, not
        proof: an announcement may come from a deleted incarnation of the session, so a
        waiter confirms it with the result it then reads (or closed itself)."""
        return self._seen.get(sid, -1)

    def forget(self, sid: str) -> None:
        self._seen.pop(sid, None)

    def notify(self, sid: str, version: int) -> None:
        """Wake this process's waiters on `sid` (`version` -1: they re-read it). A version
        already announced wakes no one (the store echoes this process's own)."""
        if version >= 0:
            if version <= self._seen.get(sid, -1):
                return
            if len(self._seen) >= 10_000:
                self._seen.clear()
            self._seen[sid] = version
        ev = self._events.pop(sid, None)
        if ev is not None:
            ev.set()

    async def announce(self, sid: str, version: int) -> None:
        """Wake the waiters here now, and every other process's through the store."""
        self.notify(sid, version)
        try:
            await self.store.announce(sid, version)
        except Exception as exc:  # best effort: the others' fallback re-read covers it
            log.info("announcing %s v%d failed: %s", sid, version, exc)

    def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done() or self._listener.get_loop() is not loop:
            self._events.clear()  # events of another (finished) loop are of no use here
            self._listener = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async for sid, version in self.store.announcements():
                    self.notify(sid, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("version announcements interrupted (%s); resubscribing", exc)
            # every waiter re-reads now: something may have been missed while away
            for sid in list(self._events):
                self.notify(sid, -1)
            await asyncio.sleep(RESUBSCRIBE_S)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
