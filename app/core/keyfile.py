"""The key ring as the key file says *now*: revoking a key takes effect within seconds.

Keys are checked on every request, so the ring must follow the file without a restart:
`KeySource.current()` reads the file (a few KB) at most once per `CHECK_S` and reloads
the ring when its bytes changed (an mtime can miss a same-size rewrite within its
granularity); SIGHUP (`force`) makes the next request
reload whatever the signature says. Every API process (uvicorn workers, other hosts
sharing the file) does this on its own, so nothing needs to be told about a change.

A file that cannot be read or parsed (half-written, say) keeps the previous ring and is
tried again on the next check, with an error in the log: replace the file atomically
(write a temporary file, then rename it over the old one), which is what
`optd keys create` does.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from app.core.auth import Caller, KeyRing, Limits

log = logging.getLogger("optd")

CHECK_S = 1.0  # how stale the ring may be: a removed key works at most this much longer


def _signature(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


class KeySource:
    """Stands where a `KeyRing` would (`authenticate`, `len`, `tenants`), reloading it."""

    def __init__(
        self,
        path: str | None,
        inline: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.inline, self.clock = path, inline, clock
        self._sig = _signature(path) if path else None
        self.ring = KeyRing.load(path, inline)  # a bad file at start-up stops the server
        self._checked = clock()

    def __len__(self) -> int:
        return len(self.ring)

    @property
    def tenants(self) -> dict[str, Limits]:
        return dict(self.ring.tenants)

    def force(self) -> None:
        """SIGHUP: reload on the next request even if the file looks unchanged."""
        self._sig = None
        self._checked = float("-inf")

    def current(self) -> KeyRing:
        now = self.clock()
        if self.path is None or now - self._checked < CHECK_S:
            return self.ring
        self._checked = now
        sig = _signature(self.path)
        if sig is not None and sig == self._sig:
            return self.ring
        try:
            ring = KeyRing.load(self.path, self.inline)
        except ValueError as exc:
            log.error("keeping the previous API keys: %s", exc)
            return self.ring  # _sig unchanged: tried again at the next check
        self.ring, self._sig = ring, sig
        log.info("API keys reloaded from %s: %d keys", self.path, len(ring))
        return ring

    def authenticate(self, authorization: str | None) -> Caller:
        return self.current().authenticate(authorization)
