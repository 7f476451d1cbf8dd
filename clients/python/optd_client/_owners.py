"""Session owners (the server's DESIGN §4 "Session owners"), client side, without I/O.

An API process answers a request for a session another process owns with `307` to the
owner (`Location`, `Optd-Owner`). Like redis-py's cluster client learning slots from
MOVED, the client follows it and remembers the owner of that session, so the session's
later requests go straight there (no redirect, no second upload of a gradient). A
connection error on the way to a remembered owner forgets it and sends the request to
the client's own URL again, saying which owner failed (`Optd-Owner-Unreachable`): that
process then serves it itself instead of redirecting to a dead owner whose lease has not
run out. Redirects and fail-overs per request are bounded (`RedirectLoopError`).
"""

from __future__ import annotations

import re
import threading

import httpx

UNREACHABLE = "optd-owner-unreachable"
MAX_REDIRECTS = 5
MAX_CACHED = 10_000
_SID = re.compile(r"/v1/sessions/([^/?]+)")
# what a dead or restarting owner looks like (not a timeout of a slow but live one)
OWNER_GONE = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)


class Owners:
    def __init__(self, base: str, max_redirects: int = MAX_REDIRECTS) -> None:
        self.base = base
        self.max_redirects = max_redirects
        self._owner: dict[str, str] = {}  # session id (as in the path) -> owner URL
        self._lock = threading.Lock()

    @staticmethod
    def sid_of(path: str) -> str | None:
        m = _SID.search(path)
        return m.group(1) if m else None

    def url_for(self, path: str) -> str:
        """Where a request for `path` goes: its session's owner when known."""
        sid = self.sid_of(path)
        owner = self._owner.get(sid) if sid is not None else None
        return (owner or self.base) + path

    def owner(self, sid: str) -> str | None:
        return self._owner.get(sid)

    def follow(self, request: httpx.Request, response: httpx.Response) -> httpx.Request:
        """The request again, to where the 307 points (same method, body and headers);
        the owner it names is remembered for the session."""
        target = request.url.join(response.headers["location"])
        owner = response.headers.get("optd-owner")
        sid = self.sid_of(request.url.raw_path.decode("ascii"))
        if owner and sid is not None:
            with self._lock:
                if len(self._owner) >= MAX_CACHED:
                    self._owner.clear()
                self._owner[sid] = owner.rstrip("/")
        return _resend(request, str(target))

    def fail_over(self, request: httpx.Request) -> httpx.Request | None:
        """After a connection error: if the request went to a remembered owner, forget it
        and send the request to the base URL instead, naming the owner that failed."""
        sid = self.sid_of(request.url.raw_path.decode("ascii"))
        owner = self._owner.get(sid) if sid is not None else None
        url = str(request.url)
        if sid is None or owner is None or not url.startswith(owner + "/"):
            return None
        with self._lock:
            if self._owner.get(sid) == owner:
                del self._owner[sid]
        return _resend(request, self.base + url[len(owner) :], {UNREACHABLE: owner})


def _resend(request: httpx.Request, url: str, extra: dict[str, str] | None = None) -> httpx.Request:
    headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    return httpx.Request(
        request.method, url, headers=headers, content=request.content, extensions=request.extensions
    )
