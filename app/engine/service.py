"""The service around the sessions: opening the configured store, readiness, and the
tenants' request rates (what `Engine.open`, `ready` and `admit` do)."""

from __future__ import annotations

import asyncio
import math

from app.core.auth import Caller
from app.core.config import Settings
from app.problems import RateLimited, StoreUnavailable
from app.store import open_store
from app.store.base import SessionStore


def configured_store(settings: Settings) -> SessionStore:
    """The store the settings name (the embedded one without OPTD_REDIS_URL), unopened."""
    return open_store(
        settings.redis_url,
        cluster=settings.redis_cluster,
        chunk_bytes=settings.chunk_mb * 2**20,
        cache_bytes=settings.cache_mb * 2**20,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        wait_replicas=settings.redis_wait_replicas,
        log_steps=settings.log_steps,
        log_min_bytes=settings.log_min_bytes,
        timeout_s=settings.redis_timeout_s,
    )


async def check_store(settings: Settings) -> None:
    """Ping the configured store once (`optd serve` refuses to start without it)."""
    store = open_store(
        settings.redis_url, cluster=settings.redis_cluster, timeout_s=settings.redis_timeout_s
    )
    try:
        await store.ping()
    finally:
        await store.close()


async def ready(store: SessionStore, timeout_s: float) -> str:
    """The store's kind when it answers within OPTD_READY_TIMEOUT_S; `StoreUnavailable`
    (503 + Retry-After) when it does not: a load balancer's probe must not hang on a
    Redis that accepts connections but never answers (SIGSTOP, a stuck host)."""
    try:
        async with asyncio.timeout(timeout_s):
            await store.ping()
    except TimeoutError:
        raise StoreUnavailable(
            f"the store did not answer within {timeout_s} s "
            "(OPTD_READY_TIMEOUT_S); is Redis stopped or overloaded?",
            retry_after=1,
        ) from None
    return store.kind


async def admit(store: SessionStore, caller: Caller) -> None:
    """Take one request from the caller's tenant's rate (429 when over it)."""
    limits = caller.limits
    if caller.tenant is None or limits.rate is None:
        return
    burst = limits.burst or 2 * limits.rate
    wait = await store.rate_take(caller.tenant, limits.rate, burst)
    if wait > 0:
        raise RateLimited(
            f"tenant {caller.tenant!r} is over its rate of {limits.rate:g} requests/s",
            retry_after=max(1, math.ceil(wait)),
        )
