"""Reading a session from Redis: this process's cached copy (optimistic steps), the load
script with the slots the process already holds, and — behind a step log — the snapshot
plus the entries the caller replays (`StoredSession.log`; the store never runs the math).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.problems import NotFound, StoreUnavailable
from app.store import keys
from app.store.base import Locked, StoredSession
from app.store.redis_conn import INLINE_BYTES, TRANSIENT_S
from app.store.redis_log import RedisStepLog
from app.store.slotcache import Entry, decode, fresh


def owned_array(a: np.ndarray) -> np.ndarray:
    """Hand a cached array to a step that will mutate it: no copy when we own its memory
    (the arrays a commit cached are the engine's own), else a copy."""
    try:
        a.setflags(write=True)
        return a
    except ValueError:
        return fresh(a)


class RedisReads(RedisStepLog):
    """The read side of RedisStore (`load`, `adopt`)."""

    async def load(
        self,
        sid: str,
        slots: Sequence[str] | None = None,
        *,
        take: bool = False,
        lock: tuple[str, int] | None = None,
        cached: bool = False,
    ) -> StoredSession:
        if cached and take:
            hit = self._take_cached(sid)
            if hit is not None:
                return hit
        names = None if slots is None else [keys.check_slot(s) for s in slots]
        return await self._load_remote(sid, names, take, lock)

    def peek(self, sid: str) -> tuple[int, bytes] | None:
        ent = self._cache.get(sid)
        return None if ent is None or ent.meta is None else (ent.version, ent.meta)

    def _take_cached(self, sid: str) -> StoredSession | None:
        """The state this process committed last, without a round trip: the commit's
        compare-and-set finds out if anyone moved on since (then the engine loads for
        real)."""
        ent = self._cache.get(sid)
        if ent is None or ent.meta is None:
            return None
        self._cache.pop(sid)
        held = {n: owned_array(a) for n, a in ent.arrays.items()}
        return StoredSession(ent.version, ent.meta, held, cached=True)

    def _held(
        self, sid: str, names: list[str] | None, take: bool
    ) -> tuple[Entry | None, dict[str, np.ndarray]]:
        """What this process holds of the session, offered to the load script as a base.
        Cached arrays are never mutated while cached: a step (`take`) removes them before
        it mutates them; a reader copies the ones it wants now, before yielding, so no
        step can change them under its copy. (A reader behind a step log therefore
        replays onto the snapshot, not onto a partial copy: the script only offers the
        cache as a base to a caller holding every slot.)"""
        ent = self._cache.get(sid)
        if ent is None:
            return None, {}
        if take:
            self._cache.pop(sid)
            return ent, dict(ent.arrays)
        return ent, {n: fresh(a) for n, a in ent.arrays.items() if names is None or n in names}

    async def _load_remote(
        self, sid: str, names: list[str] | None, take: bool, lock: tuple[str, int] | None
    ) -> StoredSession:
        mkey = keys.meta_key(sid)
        # A commit between our two reads unlinks chunks, and while a cluster migrates the
        # session's slot a chunk may already sit on the other node: read again, with a
        # growing pause, for up to TRANSIENT_S.
        deadline, pause = time.monotonic() + TRANSIENT_S, 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(max(pause * 2, 0.005), 0.25)
            ent, held = self._held(sid, names, take)
            args: list[Any] = [-1, ""] if ent is None else [ent.version, ent.inc]
            args += [INLINE_BYTES, *(lock or ("", 0))]
            args += [-1] if names is None else [len(names), *names]
            args += list(held)
            reply = await self._run("load", [mkey], args)
            if not reply:
                self._cache.pop(sid)
                raise NotFound(f"session {sid} not found")
            if len(reply) == 1:
                if take and ent is not None:
                    self._cache.put(sid, ent)  # untouched: give it back
                raise Locked(sid)
            lock = None  # held from here on, also when this read is retried
            h = dict(zip(reply[0][::2], reply[0][1::2], strict=True))
            want, chunks = [w.decode() for w in reply[1]], reply[3:]
            version, inc = int(h[b"version"]), h[b"inc"].decode()
            layout: dict[str, list[Any]] = json.loads(h[b"slots"])
            log: list[list[Any]] = json.loads(h[b"log"]) if b"log" in h else []
            self._note_log(sid, version, inc, len(log))
            if not reply[2]:
                chunks = await self._get_chunks(sid, [(n, layout[n]) for n in want])
            if any(c is None for c in chunks):
                continue
            got, pos = {}, 0
            for name in want:
                dtype, length, n = layout[name][:3]
                got[name] = decode(chunks[pos : pos + n], dtype, length)
                pos += n
            self.stats["slot_reads"] += len(got)
            hit = ent is not None and ent.version == version and ent.inc == inc
            wanted = list(layout) if names is None else [n for n in names if n in layout]
            if log and wanted and (want or not hit):
                behind = await self._behind_log(sid, h, log, want, got, ent, held, take)
                if behind is None:
                    continue  # a snapshot replaced the log meanwhile: read again
                return behind
            if hit:
                self.stats["cache_hits"] += 1
            else:
                held = {}
            if not take and (ent is None or self._cache.get(sid) is ent):
                # (if a step took the entry while we waited, its arrays are being mutated:
                # never put them back)
                keep = {**ent.arrays, **got} if hit and ent is not None else got
                # the whole state? (a partial read of the version cached keeps it whole)
                meta = h[b"meta"] if names is None else ent.meta if hit and ent else None
                self._cache.put(sid, Entry(version, inc, keep, bool(log), meta))
            out = {
                n: (owned_array(held[n]) if take else held[n]) if n in held else fresh(got[n])
                for n in wanted
            }
            return StoredSession(version, h[b"meta"], out)
        raise StoreUnavailable(f"session {sid} changed under every read; retry", retry_after=1)

    async def _behind_log(
        self,
        sid: str,
        h: dict[bytes, bytes],
        log: list[list[Any]],
        want: list[str],
        got: dict[str, np.ndarray],
        ent: Entry | None,
        held: dict[str, np.ndarray],
        take: bool,
    ) -> StoredSession | None:
        """A step log on top of the snapshot (or of our copy): every slot as the base,
        and the entries the caller must replay onto it (None: an entry is gone)."""
        version = int(h[b"version"])
        if want:
            base, since = {n: fresh(got[n]) for n in want}, version - len(log)
        else:
            assert ent is not None  # the script only skips slots we hold
            base = {n: owned_array(a) for n, a in held.items()} if take else held
            since = ent.version
        entries = await self._fetch_log(sid, log[len(log) - (version - since) :])
        if entries is None:
            return None
        inc = None if take else h[b"inc"].decode()
        return StoredSession(version, h[b"meta"], base, log=entries, incarnation=inc)

    def adopt(self, sid: str, stored: StoredSession) -> None:
        """A reader replayed the log this store handed it: keep the result (frozen copies)
        as this version's state, so the next reader does not replay again."""
        if stored.incarnation is None:
            return
        frozen = {n: fresh(a) for n, a in stored.slots.items()}
        for a in frozen.values():
            a.setflags(write=False)
        entry = Entry(stored.version, stored.incarnation, frozen, True, stored.meta)
        self._cache.put(sid, entry)

    async def _get_chunks(self, sid: str, slots: list[tuple[str, list[Any]]]) -> list[Any]:
        """Big slots: one pipeline of GETs (far cheaper than passing them through Lua)."""
        return await self._pipelined(
            ("get", [keys.chunk_key(sid, name, token, c)])
            for name, (_, _, n, token, _) in slots
            for c in range(n)
        )
