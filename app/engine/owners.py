"""Session owners (DESIGN §4 "Session owners"): which API process serves a session.

Each session has an owner process, held as a lease in the store (`owner_claim`: free or
ours -> ours for `OPTD_OWNER_LEASE_S`, else whoever holds it). A process that gets a
request for a session another live process owns sends the client there (the face answers
307 or forwards the request); a session nobody owns is taken by whoever gets a request
for it, so when an owner dies its sessions move once its lease runs out, and the new
owner catches up from the store like any cold process.

The hot path costs nothing: this process remembers the leases it holds and the ones it
saw held by others, with their ends on its own monotonic clock (measured from before the
claim was sent, so never later than the store's). Its own are renewed by a background
task once half the lease has passed; a request never waits for a renewal. Another's is
asked about again only when its known end has passed.

Ownership is a performance device, never a correctness one: every commit is still a
compare-and-set on the version, so two processes that both believe they own a session
(a stalled owner whose lease lapsed) cost a lost race, never a lost or doubled step. And
any failure to ask the store serves the request here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass

from app.core.config import Settings
from app.problems import Problem
from app.store.base import SessionStore

log = logging.getLogger("optd.owners")
PRUNE_AT = 10_000  # known leases kept before lapsed ones are forgotten


@dataclass
class Lease:
    url: str  # the holder's advertised URL
    mine: bool
    until: float  # monotonic: when the lease ends at the latest, as far as we know
    renew_at: float = 0.0


def mode_for(settings: Settings, store_kind: str) -> str:
    """redirect | proxy | off: `auto` is redirect on Redis, off on the embedded store (one
    process owns everything there; OPTD_OWNERS=redirect still runs the protocol)."""
    if settings.owners != "auto":
        return settings.owners
    return "off" if store_kind == "memory" else "redirect"


def default_url(settings: Settings) -> str | None:
    """OPTD_ADVERTISE_URL, else http://host:port when the port was configured (`optd
    serve` sets it); None: learn it from the first request's local address."""
    if settings.advertise_url:
        return settings.advertise_url.rstrip("/")
    if "port" not in settings.model_fields_set:
        return None
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        return None  # a wildcard bind: the address a request arrived on is reachable
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


class Owners:
    def __init__(self, store: SessionStore, settings: Settings) -> None:
        self.store = store
        self.mode = mode_for(settings, store.kind)
        self.ttl_ms = max(1, int(settings.owner_lease_s * 1000))
        self.url = default_url(settings)
        self.pid = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._leases: dict[str, Lease] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.claims = 0  # leases taken (not renewals), for tests and metrics

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def me(self) -> str:
        return f"{self.url} {self.pid}"

    def learn_url(self, scheme: str, server: tuple[str, int | None] | None) -> None:
        """The advertised URL from the address a request reached this process on."""
        if self.url is None and server is not None and server[1] is not None:
            host = f"[{server[0]}]" if ":" in server[0] else server[0]
            self.url = f"{scheme}://{host}:{server[1]}"

    async def owner(self, sid: str) -> str | None:
        """None: serve the request here; else the owner's URL to send it to."""
        if self.url is None:
            return None
        lease = self._leases.get(sid)
        now = time.monotonic()
        if lease is None or now >= lease.until:
            lease = await self._claim(sid)
            if lease is None:
                return None
        elif lease.mine and now >= lease.renew_at:
            lease.renew_at = lease.until  # one renewal at a time
            task = asyncio.create_task(self._renew(sid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # an owner with our own URL (a restart of this process, or a sibling of
        # `optd serve --workers N`) cannot be told apart by a balancer: serve here
        return None if lease.mine or lease.url == self.url else lease.url

    async def _claim(self, sid: str) -> Lease | None:
        t0 = time.monotonic()
        try:
            holder, left_ms = await self.store.owner_claim(sid, self.me, self.ttl_ms)
        except Problem as exc:  # store trouble: serve here, the request will tell
            log.debug("owner claim for %s failed: %s", sid, exc)
            return None
        if not holder:  # no such session (yet): nothing to own, serve here
            self._leases.pop(sid, None)
            return None
        mine = holder == self.me
        lease = Lease(holder.partition(" ")[0], mine, t0 + max(0, left_ms) / 1000)
        lease.renew_at = t0 + left_ms / 2000 if mine else lease.until
        prev = self._leases.get(sid)
        if mine and (prev is None or not prev.mine):
            self.claims += 1
        if len(self._leases) >= PRUNE_AT:
            self._leases = {s: v for s, v in self._leases.items() if v.until > t0}
        self._leases[sid] = lease
        return lease

    def forget(self, sid: str) -> None:
        """The session was deleted here (its lease went with it in the store)."""
        self._leases.pop(sid, None)

    async def _renew(self, sid: str) -> None:
        lease = await self._claim(sid)
        if lease is not None and not lease.mine:
            log.info("session %s: lost its owner lease to %s", sid, lease.url)

    async def close(self) -> None:
        """Hand the sessions this process owns over at once (instead of after the lease)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        mine = [sid for sid, lease in self._leases.items() if lease.mine]
        self._leases.clear()
        if not mine or self.url is None:
            return
        me = self.me
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(self.store.owner_release(s, me) for s in mine))
