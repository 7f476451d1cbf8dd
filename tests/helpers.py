"""Drive coroutines from plain (sync) tests, so the suite needs no asyncio plugin.

All tests share one event loop: redis-py's asyncio connections belong to the loop that
opened them, so a store created in one test's `run` calls must be used and closed on
the same loop. `close_loop` is called once at the end of the session by conftest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

_runner: asyncio.Runner | None = None


def run(aw: Awaitable[T]) -> T:
    """Run `aw` (a coroutine, or any awaitable such as a redis-py command) to completion on
    the shared test loop and return its result."""
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()

    async def wait() -> T:
        return await aw

    return _runner.run(wait())


def close_loop() -> None:
    global _runner
    if _runner is not None:
        _runner.close()
        _runner = None
