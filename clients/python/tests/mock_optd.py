"""A scripted fake optd for `httpx.MockTransport`: records requests, replays responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from safetensors.numpy import save

from optd_client import AsyncClient, Client

URL = "http://optd.test"
Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def problem(slug: str, status: int, detail: str = "details", **extra: Any) -> httpx.Response:
    headers = {}
    if "retry_after" in extra:
        headers["retry-after"] = str(extra["retry_after"])
    body = {"type": f"urn:optd:problem:{slug}", "title": slug, "status": status, "detail": detail}
    return httpx.Response(
        status,
        content=json.dumps(body | extra),
        headers={"content-type": "application/problem+json", **headers},
    )


def tensors(arrays: dict[str, Any], status: int = 200, **fields: Any) -> httpx.Response:
    """A safetensors tensor response, scalars JSON-encoded in __metadata__ like the server."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    body = save({k: np.asarray(v) for k, v in arrays.items()}, metadata=meta)
    headers = {"content-type": "application/x-safetensors"}
    if "version" in fields:
        headers["etag"] = f'"{fields["version"]}"'
    return httpx.Response(status, content=body, headers=headers)


def step_reply(version: int = 1, **params: Any) -> httpx.Response:
    arrays = params or {"w": np.zeros(2, np.float32)}
    return tensors(arrays, version=version, step=version, lr=0.1, grad_norm=1.5, staleness=None)


class FakeOptd:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx.Response):
            return reply(request)
        return reply

    def client(self, **options: Any) -> Client:
        options.setdefault("backoff", 0.0)
        client = Client(URL, transport=httpx.MockTransport(self), **options)
        client._sleep = self.sleeps.append  # type: ignore[assignment]
        return client

    def async_client(self, **options: Any) -> AsyncClient:
        options.setdefault("backoff", 0.0)
        client = AsyncClient(URL, transport=httpx.MockTransport(self), **options)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        client._sleep = sleep  # type: ignore[assignment]
        return client

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]
