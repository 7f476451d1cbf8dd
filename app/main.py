"""create_app(settings) -> FastAPI. The lifespan opens the store and checks it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import errors
from app.api.routes import health, optimizers, sessions, state, step
from app.core.config import Settings
from app.engine import Engine
from app.metrics import Metrics
from app.store import open_store
from app.store.base import SessionStore

log = logging.getLogger("optd")


def describe_store(settings: Settings) -> str:
    if settings.redis_url is None:
        return (
            "store: embedded in-memory store (OPTD_REDIS_URL is not set): one process, "
            "nothing survives a restart"
        )
    kind = "Redis Cluster" if settings.redis_cluster else "Redis"
    return f"store: {kind} at {redact(settings.redis_url)}"


def redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def create_app(settings: Settings | None = None, store: SessionStore | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        s = store or open_store(
            settings.redis_url,
            cluster=settings.redis_cluster,
            chunk_bytes=settings.chunk_mb * 2**20,
            cache_bytes=settings.cache_mb * 2**20,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            wait_replicas=settings.redis_wait_replicas,
        )
        log.info(describe_store(settings) if own else f"store: {s.kind} (provided)")
        await s.ping()  # refuse to start against an unreachable Redis
        metrics.info.set(1 if s.kind != "memory" else 0)
        app.state.engine = Engine(s, settings, metrics)
        try:
            yield
        finally:
            if own:
                await s.close()

    app = FastAPI(
        title="optd",
        version=__version__,
        description="Optimizer-as-a-service: Adam-family optimizer state behind /step.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    for module in (sessions, step, state, optimizers, health):
        app.include_router(module.router)
    return app
