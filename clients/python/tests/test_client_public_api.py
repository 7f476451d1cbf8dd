"""The public API is exactly what `__all__` lists, and nothing private leaks."""

from __future__ import annotations

import importlib
import inspect

import pytest

import optd_client

PUBLIC = {
    "AsyncClient", "AsyncSession", "Client", "Session", "Checkpoint", "StepInfo",
    "OptdError", "TransportError", "BarrierTimeoutError",
    "InvalidBodyError", "UnauthorizedError", "NotFoundError", "NotAcceptableError",
    "StaleGradientError", "ConflictError", "PreconditionFailedError", "TooLargeError",
    "UnsupportedMediaTypeError", "InvalidTensorError", "InvalidConfigError",
    "IdempotencyMismatchError", "PreconditionRequiredError", "RateLimitedError",
    "StoreUnavailableError", "RedirectLoopError", "PrepareExpiredError",
    "ShardsDivergedError", "__version__",
}  # fmt: skip


def test_all_lists_exactly_the_public_api() -> None:
    assert set(optd_client.__all__) == PUBLIC
    assert len(optd_client.__all__) == len(PUBLIC)
    for name in optd_client.__all__:
        assert getattr(optd_client, name) is not None
    exported = {
        n for n, v in vars(optd_client).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    assert exported == PUBLIC - {"__version__"}


def test_torch_module_all() -> None:
    pytest.importorskip("torch")
    module = importlib.import_module("optd_client.torch")
    assert set(module.__all__) == {
        "DiLoCo", "RemoteOptimizer", "from_torch_state_dict", "to_torch_state_dict",
    }  # fmt: skip
    for name in module.__all__:
        assert callable(getattr(module, name))


def test_errors_share_one_base() -> None:
    for name in PUBLIC:
        obj = getattr(optd_client, name)
        if name.endswith("Error"):
            assert issubclass(obj, optd_client.OptdError)
    assert optd_client.__version__ == "0.1.0"


def test_py_typed_is_shipped() -> None:
    from pathlib import Path

    assert (Path(optd_client.__file__).parent / "py.typed").is_file()
