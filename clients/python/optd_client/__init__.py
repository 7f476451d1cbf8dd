"""optd-client: the Python SDK of optd, an optimizer-as-a-service.

`Client` and `AsyncClient` speak the optd HTTP API with numpy arrays in and out;
`optd_client.torch` (extra `torch`) adapts a session to `torch.optim`.
"""

from optd_client._version import __version__
from optd_client.async_client import AsyncClient, AsyncSession
from optd_client.client import Client, Session
from optd_client.errors import (
    BarrierTimeoutError,
    ConflictError,
    IdempotencyMismatchError,
    InvalidBodyError,
    InvalidConfigError,
    InvalidTensorError,
    NotAcceptableError,
    NotFoundError,
    OptdError,
    PreconditionFailedError,
    PreconditionRequiredError,
    PrepareExpiredError,
    RateLimitedError,
    RedirectLoopError,
    ShardsDivergedError,
    StaleGradientError,
    StoreUnavailableError,
    TooLargeError,
    TransportError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from optd_client.types import Checkpoint, StepInfo

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "BarrierTimeoutError",
    "Checkpoint",
    "Client",
    "ConflictError",
    "IdempotencyMismatchError",
    "InvalidBodyError",
    "InvalidConfigError",
    "InvalidTensorError",
    "NotAcceptableError",
    "NotFoundError",
    "OptdError",
    "PreconditionFailedError",
    "PreconditionRequiredError",
    "PrepareExpiredError",
    "RateLimitedError",
    "RedirectLoopError",
    "Session",
    "ShardsDivergedError",
    "StaleGradientError",
    "StepInfo",
    "StoreUnavailableError",
    "TooLargeError",
    "TransportError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "__version__",
]
