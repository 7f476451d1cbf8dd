"""RFC 9457 problems as plain exceptions.

Every layer (optim validation, codecs, stores, engine) raises these; only
`app.api.errors` knows how to turn them into HTTP responses, so the pure
layers never import FastAPI.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Problem(Exception):
    """A client-visible failure with a stable slug (`urn:optd:problem:<slug>`)."""

    slug: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}
        if "retry_after" in extra:
            self.headers["Retry-After"] = str(extra["retry_after"])

    @property
    def type(self) -> str:
        return f"urn:optd:problem:{self.slug}"

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class InvalidBody(Problem):
    slug, status, title = "invalid-body", 400, "The request body could not be parsed"


class Unauthorized(Problem):
    slug, status, title = "unauthorized", 401, "Missing or invalid API key"


class NotFound(Problem):
    slug, status, title = "not-found", 404, "Not found"


class NotAcceptable(Problem):
    slug, status, title = "not-acceptable", 406, "No acceptable representation"


class RequestTimeout(Problem):
    """A body that arrived slower than the floor (OPTD_BODY_TIMEOUT_S, OPTD_BODY_MIN_RATE_KIB).
    The rest of the body is never read, so the connection closes after the answer."""

    slug, status, title = "request-timeout", 408, "The request body arrived too slowly"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers["Connection"] = "close"


class StaleGradient(Problem):
    slug, status, title = "stale-gradient", 409, "The gradient is too stale"


class Conflict(Problem):
    slug, status, title = "conflict", 409, "Conflict"


class PrepareExpired(Problem):
    """A sharded step's commit names a prepared part this process does not hold (DESIGN §3):
    prepare that shard again and commit with the same sumsq and If-Match."""

    slug, status, title = "prepare-expired", 409, "The prepared gradient is gone"


class PreconditionFailed(Problem):
    slug, status, title = "precondition-failed", 412, "Precondition failed"


class TooLarge(Problem):
    slug, status, title = "too-large", 413, "Request too large"


class UnsupportedMediaType(Problem):
    slug, status, title = "unsupported-media-type", 415, "Unsupported media type"


class InvalidTensor(Problem):
    slug, status, title = "invalid-tensor", 422, "Invalid tensor"


class InvalidConfig(Problem):
    slug, status, title = "invalid-config", 422, "Invalid configuration"


class IdempotencyMismatch(Problem):
    slug, status, title = "idempotency-mismatch", 422, "Idempotency key reused with another body"


class PreconditionRequired(Problem):
    slug, status, title = "precondition-required", 428, "Precondition required"


class RateLimited(Problem):
    slug, status, title = "rate-limited", 429, "Rate limited"


class StoreUnavailable(Problem):
    slug, status, title = "store-unavailable", 503, "The session store is unavailable"

    def __init__(self, detail: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)


# The slugs the SDKs know (testdata/wire/problems.json); RequestTimeout is not among them:
# it answers a client too slow to be one of them, and an SDK maps unknown slugs generically.
ALL_PROBLEMS: tuple[type[Problem], ...] = (
    InvalidBody,
    Unauthorized,
    NotFound,
    NotAcceptable,
    StaleGradient,
    Conflict,
    PreconditionFailed,
    TooLarge,
    UnsupportedMediaType,
    InvalidTensor,
    InvalidConfig,
    IdempotencyMismatch,
    PreconditionRequired,
    RateLimited,
    StoreUnavailable,
)
