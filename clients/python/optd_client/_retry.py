"""The retry policy and the one exchange loop every request goes through, without I/O.

Requests are generators ("flows") that yield `Send(request)` and `Sleep(seconds)` and
receive an `httpx.Response` (or the `httpx.TransportError` the send raised) back, or
`Gather(flows)` and receive the flows' results; the sync and async clients only
execute those operations. So what is retried, how long to
wait and which exception a failure becomes are decided here, once.
"""

from __future__ import annotations

import random
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from optd_client._owners import OWNER_GONE, Owners
from optd_client.errors import (
    OptdError,
    RedirectLoopError,
    TransportError,
    error_from_response,
    parse_problem,
    parse_retry_after,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    request: httpx.Request


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Gather:
    """Run these flows concurrently (threads or asyncio tasks); the answer is the list of
    their results in order. The flows must not raise (wrap them in `catch`) nor gather."""

    flows: tuple[Generator[Any, Any, Any], ...]


Op = Send | Sleep | Gather
Flow = Generator[Op, Any, T]

_IN_FLIGHT = re.compile(r"in[ -]?flight|in progress|still running|being processed", re.I)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: attempt k sleeps uniform(0, min(max, b*2^k)).

    Retried: connection errors and timeouts (every request the client sends is
    idempotent or carries an Idempotency-Key), 503, 429, and 409 `conflict` when the
    server says the same request is in flight or asks to retry later. `Retry-After`
    is honoured (up to `max_retry_after` seconds) instead of the jittered delay.
    """

    retries: int = 5
    backoff: float = 0.2
    max_backoff: float = 10.0
    max_retry_after: float = 120.0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must be non-negative")

    def jitter(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.max_backoff, self.backoff * 2.0**attempt))

    def delay(self, attempt: int, result: httpx.Response | BaseException) -> float | None:
        """Seconds to wait before retry number `attempt + 1`, or None for no retry."""
        if attempt >= self.retries:
            return None
        if isinstance(result, BaseException):
            return self.jitter(attempt) if isinstance(result, httpx.TransportError) else None
        status = result.status_code
        if status not in (409, 429, 503):
            return None
        problem = parse_problem(result.content)
        retry_after = parse_retry_after(result.headers.get("retry-after"), problem)
        if status == 409:
            if str(problem.get("type", "")).rsplit(":", 1)[-1] != "conflict":
                return None  # stale-gradient: retrying the same gradient cannot help
            in_flight = problem.get("in_flight") is True or bool(
                _IN_FLIGHT.search(str(problem.get("detail", "")))
            )
            if not in_flight and retry_after is None:
                return None  # e.g. base_version ahead of the session
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) + self.rng.uniform(0.0, self.backoff)
        return self.jitter(attempt)


def catch(flow: Flow[T]) -> Flow[T | OptdError]:
    """`flow`, its `OptdError` returned instead of raised (for `Gather`)."""
    try:
        return (yield from flow)
    except OptdError as exc:
        return exc


def exchange(
    policy: RetryPolicy, request: httpx.Request, owners: Owners | None = None
) -> Flow[httpx.Response]:
    """Send `request` (the same object, so the same body and Idempotency-Key) until it
    succeeds, fails for good, or the retries run out; errors become `OptdError`s. With
    `owners`, 307s to a session's owner are followed and remembered (`_owners`)."""
    attempt = redirects = 0
    while True:
        result: httpx.Response | BaseException = yield Send(request)
        if owners is not None:
            if isinstance(result, httpx.Response) and result.status_code in (307, 308):
                after = owners.follow(request, result) if "location" in result.headers else None
            elif isinstance(result, OWNER_GONE):
                after = owners.fail_over(request)
            else:
                after = None
            if after is not None:
                redirects += 1
                if redirects > owners.max_redirects:
                    raise RedirectLoopError(
                        f"{request.method} {request.url.path}: more than "
                        f"{owners.max_redirects} redirects to session owners (last: "
                        f"{after.url}); do the API processes advertise reachable URLs "
                        "(OPTD_ADVERTISE_URL)?",
                        status=result.status_code if isinstance(result, httpx.Response) else None,
                    )
                request = after
                continue
        delay = policy.delay(attempt, result)
        if delay is None:
            if isinstance(result, BaseException):
                tries = attempt + 1
                raise TransportError(
                    f"{request.method} {request.url.path}: {type(result).__name__}: {result} "
                    f"(after {tries} attempt{'s' if tries > 1 else ''})",
                ) from result
            if result.is_error:
                raise error_from_response(result.status_code, result.headers, result.content)
            return result
        yield Sleep(delay)
        attempt += 1
