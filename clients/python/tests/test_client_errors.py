"""Error mapping for every problem slug, and the retry policy, against MockTransport."""

from __future__ import annotations

import asyncio
import random

import httpx
import numpy as np
import pytest
from mock_optd import FakeOptd, problem, step_reply

import optd_client as oc
from optd_client._retry import RetryPolicy

SLUGS = {
    "invalid-body": (400, oc.InvalidBodyError),
    "unauthorized": (401, oc.UnauthorizedError),
    "not-found": (404, oc.NotFoundError),
    "not-acceptable": (406, oc.NotAcceptableError),
    "stale-gradient": (409, oc.StaleGradientError),
    "conflict": (409, oc.ConflictError),
    "precondition-failed": (412, oc.PreconditionFailedError),
    "too-large": (413, oc.TooLargeError),
    "unsupported-media-type": (415, oc.UnsupportedMediaTypeError),
    "invalid-tensor": (422, oc.InvalidTensorError),
    "invalid-config": (422, oc.InvalidConfigError),
    "idempotency-mismatch": (422, oc.IdempotencyMismatchError),
    "precondition-required": (428, oc.PreconditionRequiredError),
    "rate-limited": (429, oc.RateLimitedError),
    "store-unavailable": (503, oc.StoreUnavailableError),
}


@pytest.mark.parametrize("slug", sorted(SLUGS))
def test_every_slug_maps_to_its_class(slug: str) -> None:
    status, cls = SLUGS[slug]
    fake = FakeOptd(problem(slug, status, "what went wrong", current_version=12, errors=[1]))
    with pytest.raises(cls) as info:
        fake.client(retries=0).session("s1").step({"w": np.zeros(2)})
    err = info.value
    assert isinstance(err, oc.OptdError) and type(err) is cls
    assert (err.status, err.slug, err.type) == (status, slug, f"urn:optd:problem:{slug}")
    assert (err.title, err.detail) == (slug, "what went wrong")
    assert err.problem["errors"] == [1] and err.current_version == 12
    assert "what went wrong" in str(err)


def test_stale_gradient_exposes_current_version_and_is_not_retried() -> None:
    fake = FakeOptd(problem("stale-gradient", 409, "too old", current_version=40, staleness=9))
    with pytest.raises(oc.StaleGradientError) as info:
        fake.client().session("s1").step({"w": np.zeros(2)}, base_version=31)
    assert info.value.current_version == 40 and len(fake.requests) == 1


def test_unknown_slug_and_non_problem_bodies_use_the_base_class() -> None:
    fake = FakeOptd(problem("internal", 500, "boom"))
    with pytest.raises(oc.OptdError) as info:
        fake.client().session("s1").info()
    assert type(info.value) is oc.OptdError and info.value.slug == "internal"
    fake = FakeOptd(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(oc.OptdError) as info:
        fake.client().session("s1").info()
    assert (
        info.value.status == 502 and info.value.problem == {} and "bad gateway" in str(info.value)
    )
    assert len(fake.requests) == 1


def test_retries_reuse_the_idempotency_key_and_body() -> None:
    fake = FakeOptd(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        problem("store-unavailable", 503, "redis down", retry_after=2),
        problem("rate-limited", 429, "slow down", retry_after=3),
        problem("conflict", 409, "a request with this Idempotency-Key is still in flight"),
        problem("conflict", 409, "busy", in_flight=True),
        step_reply(1),
    )
    session = fake.client(retries=6, backoff=0.0).session("s1")
    session.step({"w": np.ones(2)}, loss=1.0)
    assert len(fake.requests) == 7
    assert len({r.headers["idempotency-key"] for r in fake.requests}) == 1
    assert len({r.content for r in fake.requests}) == 1
    assert fake.sleeps[2:4] == [2.0, 3.0]  # Retry-After honoured
    assert session.last is not None and session.last.version == 1


def test_each_call_gets_a_new_key() -> None:
    fake = FakeOptd(step_reply(1))
    session = fake.client().session("s1")
    session.step({"w": np.ones(2)})
    session.step({"w": np.ones(2)})
    assert (
        fake.requests[0].headers["idempotency-key"] != fake.requests[1].headers["idempotency-key"]
    )


def test_retries_are_bounded() -> None:
    fake = FakeOptd(problem("store-unavailable", 503, "down", retry_after=1))
    with pytest.raises(oc.StoreUnavailableError) as info:
        fake.client(retries=2).session("s1").step({"w": np.ones(2)})
    assert len(fake.requests) == 3 and info.value.retry_after == 1.0
    fake = FakeOptd(httpx.ConnectError("refused"))
    with pytest.raises(oc.TransportError) as terr:
        fake.client(retries=3).session("s1").params()
    assert len(fake.requests) == 4 and isinstance(terr.value.__cause__, httpx.ConnectError)
    assert "after 4 attempts" in str(terr.value) and terr.value.status is None


@pytest.mark.parametrize(
    "reply",
    [
        problem("conflict", 409, "base_version 9 is ahead of the session's version 3"),
        problem("invalid-tensor", 422, "shape"),
        problem("not-found", 404, "gone"),
        problem("precondition-failed", 412, "If-Match 3 but 4"),
    ],
)
def test_no_retry_on_final_errors(reply: httpx.Response) -> None:
    fake = FakeOptd(reply)
    with pytest.raises(oc.OptdError):
        fake.client().session("s1").step({"w": np.ones(2)})
    assert len(fake.requests) == 1


def test_conflict_with_retry_after_is_retried() -> None:
    fake = FakeOptd(
        problem("conflict", 409, "changed 50 times; retry", retry_after=1), step_reply()
    )
    fake.client().session("s1").step({"w": np.ones(2)})
    assert len(fake.requests) == 2


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(retries=10, backoff=0.5, max_backoff=4.0, rng=random.Random(1))
    error = httpx.ConnectError("x")
    for attempt in range(8):
        cap = min(4.0, 0.5 * 2**attempt)
        delays = [policy.delay(attempt, error) for _ in range(200)]
        assert all(d is not None and 0.0 <= d <= cap for d in delays)
        assert max(d for d in delays if d is not None) > 0.8 * cap  # spread over [0, cap]
    assert policy.delay(10, error) is None
    assert policy.delay(0, ValueError("not transport")) is None
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(backoff=0.0, max_retry_after=5.0)
    assert policy.delay(0, problem("rate-limited", 429, "x", retry_after=3600)) == 5.0


def test_async_client_retries_and_maps_errors() -> None:
    fake = FakeOptd(
        httpx.ConnectError("refused"),
        problem("store-unavailable", 503, "down", retry_after=0),
        step_reply(2),
        problem("invalid-tensor", 422, "bad shape"),
    )

    async def main() -> None:
        async with fake.async_client() as client:
            session = client.session("s1")
            await session.step({"w": np.ones(2)})
            assert session.last is not None and session.last.version == 2
            with pytest.raises(oc.InvalidTensorError):
                await session.step({"w": np.ones(3)})

    asyncio.run(main())
    keys = [r.headers["idempotency-key"] for r in fake.requests]
    assert len(set(keys[:3])) == 1 and keys[3] != keys[0]
