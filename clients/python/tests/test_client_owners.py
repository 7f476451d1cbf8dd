"""Session owners (307 to the owner process): the SDK follows, caches the owner per
session, fails over to its own URL on a connection error, and bounds redirects."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from mock_optd import URL, FakeOptd, step_reply

from optd_client import RedirectLoopError

OWNER = "http://owner.test:9000"
GRADS = {"w": np.ones(2, np.float32)}


def redirect_to(owner: str) -> httpx.Response:
    def reply(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        return httpx.Response(307, headers={"location": owner + path, "optd-owner": owner})

    return reply  # type: ignore[return-value]


def test_follows_and_caches_the_owner() -> None:
    fake = FakeOptd(redirect_to(OWNER), step_reply(1), step_reply(2), step_reply(3))
    with fake.client() as client:
        session = client.session("s1")
        session.step(GRADS)
        session.step(GRADS)
        client.session("s1").step(GRADS)  # another handle, same client: same cache
    urls = [str(r.url) for r in fake.requests]
    assert urls[0] == f"{URL}/v1/sessions/s1/step"
    assert urls[1:] == [f"{OWNER}/v1/sessions/s1/step"] * 3
    # the redirected request is the same request: body and Idempotency-Key re-sent
    assert fake.requests[1].content == fake.requests[0].content
    key = fake.requests[0].headers["idempotency-key"]
    assert fake.requests[1].headers["idempotency-key"] == key
    assert fake.requests[1].headers["host"] == "owner.test:9000"


def test_connection_error_forgets_the_owner_and_retries_at_the_base() -> None:
    def dead_owner(request: httpx.Request) -> httpx.Response:
        if request.url.host == "owner.test":
            raise httpx.ConnectError("refused")
        assert request.headers["optd-owner-unreachable"] == OWNER
        return step_reply(2)

    fake = FakeOptd(redirect_to(OWNER), step_reply(1), dead_owner, dead_owner, step_reply(3))
    with fake.client() as client:
        session = client.session("s1")
        session.step(GRADS)
        session.step(GRADS)
        assert session.last is not None and session.last.version == 2
        session.step(GRADS)  # no owner known any more: the base URL
    hosts = [r.url.host for r in fake.requests]
    assert hosts == ["optd.test", "owner.test", "owner.test", "optd.test", "optd.test"]
    assert fake.sleeps == []  # the fail-over is immediate, not a retry's backoff


def test_redirect_loop_is_an_error() -> None:
    fake = FakeOptd(redirect_to(OWNER))
    with fake.client() as client, pytest.raises(RedirectLoopError, match="redirects"):
        client.session("s1").step(GRADS)
    assert len(fake.requests) == 6  # the first request and 5 redirects


def test_async_client_follows_and_caches() -> None:
    fake = FakeOptd(redirect_to(OWNER), step_reply(1), step_reply(2))

    async def go() -> None:
        async with fake.async_client() as client:
            session = client.session("s1")
            await session.step(GRADS)
            await session.step(GRADS)

    asyncio.run(go())
    assert [r.url.host for r in fake.requests] == ["optd.test", "owner.test", "owner.test"]
