"""Session owners at the HTTP face (DESIGN §4 "Session owners"): a request for a session
another live API process owns is answered `307 Temporary Redirect` to it (`Location`: the
owner's URL + the same path and query; `Optd-Owner`: the owner's URL), or, with
`OPTD_OWNERS=proxy` (and for browsers, which cannot follow a redirect to another origin),
forwarded to it and its answer returned.

A pure ASGI middleware, ahead of routing (so the fast step route too): for a session this
process owns it is a regex match and a dict lookup (`engine.owners`). It runs before
authentication: the owner authenticates (and counts the request against the tenant's
rate) once, where the request is served.

A request is served here, whoever owns the session, when it was forwarded by another
process (`Optd-Forwarded`: one hop at most) or when the client says the owner it was sent
to is unreachable (`Optd-Owner-Unreachable: <url>`, the SDKs' failover while a dead
owner's lease runs out). Commits are compare-and-set on the version whatever the owner.
"""

from __future__ import annotations

import re

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import problem_response
from app.api.transport import read_body
from app.engine import Engine
from app.problems import Problem

SESSION_PATH = re.compile(r"/v1/sessions/([A-Za-z0-9_-]{1,64})(?:/|$)")
FORWARDED = b"optd-forwarded"
UNREACHABLE = b"optd-owner-unreachable"
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"host", b"te"})


class OwnerRouting:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        match = SESSION_PATH.match(scope["path"])
        engine: Engine | None = getattr(scope["app"].state, "engine", None)
        if match is None or engine is None or not engine.owners.enabled:
            return await self.app(scope, receive, send)
        owners = engine.owners
        if owners.url is None:
            owners.learn_url(scope.get("scheme", "http"), scope.get("server"))
        target = await owners.owner(match.group(1))
        if target is None or _served_here(scope, target):
            return await self.app(scope, receive, send)
        path = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            path += b"?" + scope["query_string"]
        url = target + path.decode("latin-1")
        if owners.mode == "proxy" or _from_browser(scope):
            engine.metrics.owner_proxied.inc()
            return await self._forward(scope, receive, send, url, target)
        engine.metrics.owner_redirects.inc()
        await send(
            {
                "type": "http.response.start",
                "status": 307,
                "headers": [
                    (b"location", url.encode("latin-1")),
                    (b"optd-owner", target.encode("latin-1")),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, url: str, owner: str
    ) -> None:
        """Proxy mode: the whole body is read first, so an owner that cannot be reached (its
        lease not yet run out) is answered here instead, from the same body. It is read
        under the same limits as every route's (`read_body`: 413 above the size limit,
        408 when slower than the floor), answered here as problems."""
        settings = scope["app"].state.engine.settings
        try:
            chunks = [await read_body(Request(scope, receive), settings)]
        except ClientDisconnect:
            return
        except Problem as exc:
            refusal = problem_response(exc.to_dict(), exc.headers)
            return await refusal(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        headers.append((FORWARDED, b"1"))
        client = _client(scope)
        request = client.build_request(
            scope["method"], url, headers=headers, content=b"".join(chunks)
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError:
            return await self.app(scope, _replay(chunks), send)
        try:
            out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            out.append((b"optd-owner", owner.encode("latin-1")))
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            async for data in response.aiter_raw():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


def _from_browser(scope: Scope) -> bool:
    """A browser (the /ui dashboard's fetches send Sec-Fetch-Mode) cannot follow a 307 to
    another origin without CORS, and would drop `Authorization` doing it: forward those."""
    return any(name == b"sec-fetch-mode" for name, _ in scope["headers"])


def _served_here(scope: Scope, target: str) -> bool:
    for name, value in scope["headers"]:
        if name == FORWARDED or (name == UNREACHABLE and value.decode("latin-1") == target):
            return True
    return False


def _client(scope: Scope) -> httpx.AsyncClient:
    """One connection pool per app (closed by the lifespan in app.main)."""
    state = scope["app"].state
    client: httpx.AsyncClient | None = getattr(state, "forwarder", None)
    if client is None:
        timeout = httpx.Timeout(None, connect=2.0)  # the owner bounds its own waits
        client = state.forwarder = httpx.AsyncClient(timeout=timeout)
    return client


def _replay(chunks: list[bytes]) -> Receive:
    body = b"".join(chunks)
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
