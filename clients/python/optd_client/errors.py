"""Exceptions: one class per optd problem slug, all under `OptdError`.

The server answers every failure as RFC 9457 `application/problem+json` with a
`type` of `urn:optd:problem:<slug>`; the slug, not the status code, picks the class,
because two problems share 409 and three share 422.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PROBLEM_PREFIX = "urn:optd:problem:"


class OptdError(Exception):
    """A request to optd failed. `problem` is the raw problem document (may be empty)."""

    slug: str = ""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.problem: dict[str, Any] = dict(problem or {})
        self.status = status
        self.type: str = str(self.problem.get("type", ""))
        self.title: str = str(self.problem.get("title", ""))
        self.detail: str = str(self.problem.get("detail", message))
        self.retry_after = retry_after
        if self.type.startswith(PROBLEM_PREFIX):
            # keep the server's slug even on the base class (unknown or future slugs)
            self.slug = self.type[len(PROBLEM_PREFIX) :]

    @property
    def current_version(self) -> int | None:
        """The session's version when the server names it (stale, conflict, 412)."""
        value = self.problem.get("current_version")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class InvalidBodyError(OptdError):
    slug = "invalid-body"


class UnauthorizedError(OptdError):
    slug = "unauthorized"


class NotFoundError(OptdError):
    slug = "not-found"


class NotAcceptableError(OptdError):
    slug = "not-acceptable"


class StaleGradientError(OptdError):
    """The gradient's `base_version` is more than `max_staleness` behind `current_version`."""

    slug = "stale-gradient"


class ConflictError(OptdError):
    slug = "conflict"


class PrepareExpiredError(ConflictError):
    """A sharded step's commit named a prepared gradient its shard no longer holds (it
    expired, or the shard's owner changed). The SDK prepares that shard again itself."""

    slug = "prepare-expired"


class PreconditionFailedError(OptdError):
    slug = "precondition-failed"


class TooLargeError(OptdError):
    slug = "too-large"


class UnsupportedMediaTypeError(OptdError):
    slug = "unsupported-media-type"


class InvalidTensorError(OptdError):
    slug = "invalid-tensor"


class InvalidConfigError(OptdError):
    slug = "invalid-config"


class IdempotencyMismatchError(OptdError):
    slug = "idempotency-mismatch"


class PreconditionRequiredError(OptdError):
    slug = "precondition-required"


class RateLimitedError(OptdError):
    slug = "rate-limited"


class StoreUnavailableError(OptdError):
    slug = "store-unavailable"


class TransportError(OptdError):
    """No HTTP answer (connection refused or reset, timeout) even after the retries."""

    slug = "transport"


class RedirectLoopError(OptdError):
    """Too many 307s (or owner fail-overs) for one request: the API processes disagree
    about who owns the session, or a balancer rewrites redirects in a loop."""

    slug = "redirect-loop"


class BarrierTimeoutError(OptdError):
    """A sync-mode step's barrier did not complete within the client's `barrier_timeout`."""

    slug = "barrier-timeout"


class ShardsDivergedError(OptdError):
    """A sharded session's shards stayed at different versions: another client's step
    was between its commits for longer than the SDK waits (10 s), or it died there and
    left the session half-applied (DESIGN §3 "Sharded sessions": restore the shards from
    checkpoints). `problem["versions"]` holds the shards' versions last seen."""

    slug = "shards-diverged"


PROBLEM_CLASSES: dict[str, type[OptdError]] = {
    cls.slug: cls
    for cls in (
        InvalidBodyError,
        UnauthorizedError,
        NotFoundError,
        NotAcceptableError,
        StaleGradientError,
        ConflictError,
        PrepareExpiredError,
        PreconditionFailedError,
        TooLargeError,
        UnsupportedMediaTypeError,
        InvalidTensorError,
        InvalidConfigError,
        IdempotencyMismatchError,
        PreconditionRequiredError,
        RateLimitedError,
        StoreUnavailableError,
    )
}


def parse_problem(content: bytes) -> dict[str, Any]:
    """The problem document of an error body, or {} when it is not a JSON object."""
    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def parse_retry_after(header: str | None, problem: Mapping[str, Any]) -> float | None:
    """Seconds from `Retry-After` (delta-seconds form) or the problem's `retry_after`."""
    for value in (header, problem.get("retry_after")):
        if isinstance(value, bool) or value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None


def error_from_response(status: int, headers: Mapping[str, str], content: bytes) -> OptdError:
    """Map an HTTP error response onto the exception class of its problem slug."""
    problem = parse_problem(content)
    kind = str(problem.get("type", ""))
    slug = kind[len(PROBLEM_PREFIX) :] if kind.startswith(PROBLEM_PREFIX) else ""
    cls = PROBLEM_CLASSES.get(slug, OptdError)
    detail = problem.get("detail")
    if detail is None:
        text = content[:200].decode("utf-8", "replace").strip()
        detail = text or "no details"
    title = problem.get("title") or f"HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after"), problem)
    return cls(
        f"{status} {title}: {detail}", status=status, problem=problem, retry_after=retry_after
    )
