"""create_app(settings) -> FastAPI. The lifespan opens the store and checks it."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app import __version__
from app.api import docs, errors, openapi
from app.api.deps import authorize
from app.api.owners import OwnerRouting
from app.api.routes import health, history, optimizers, sessions, shards, state, step, ui, workers
from app.core.auth import auth_enabled
from app.core.config import Settings
from app.core.keyfile import KeySource
from app.core.malloc import keep_freed_memory
from app.engine import Engine, SessionStore
from app.metrics import Metrics

log = logging.getLogger("optd")


def describe_store(settings: Settings) -> str:
    if settings.redis_url is None:
        return (
            "store: embedded in-memory store (OPTD_REDIS_URL is not set): one process, "
            "nothing survives a restart"
        )
    kind = "Redis Cluster" if settings.redis_cluster else "Redis"
    return f"store: {kind} at {redact(settings.redis_url)}"


_announced: set[str] = set()


def announce(line: str) -> None:
    """Log a start-up line once per process (`optd serve` says it before uvicorn starts,
    the lifespan again in the same process: once is enough; worker processes say it too)."""
    if line not in _announced:
        _announced.add(line)
        log.info(line)


def redact(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def _on_sighup(handler: Callable[[], None]) -> Callable[[], None]:
    """Install a SIGHUP handler where this loop may own signals (the main thread on a Unix;
    not the threads tests run apps in); returns what uninstalls it."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, handler)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return lambda: None

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return uninstall


def create_app(settings: Settings | None = None, store: SessionStore | None = None) -> FastAPI:
    settings = settings or Settings()
    keep_freed_memory(settings.malloc_trim_mb)
    metrics = Metrics()
    keyring = KeySource(settings.api_keys_file, settings.api_keys)  # follows the file
    auth_on = auth_enabled(settings.auth, settings.host, keyring.ring)
    if auth_on and not len(keyring):
        raise RuntimeError(
            "auth is on (OPTD_AUTH=on, or the server binds a non-loopback address) but no "
            "API keys are configured: create one with `optd keys create --file keys.json "
            "--tenant <name>` and set OPTD_API_KEYS_FILE, or set OPTD_AUTH=off"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        announce(describe_store(settings) if store is None else f"store: {store.kind} (provided)")
        log.info(
            f"auth: on ({len(keyring)} API keys, {len(keyring.tenants)} tenants with quotas)"
            if auth_on
            else "auth: off (loopback bind, no keys configured): anyone on this host has access"
        )
        hup = _on_sighup(keyring.force)  # reload the keys now (they follow the file anyway)
        # refuses to start against an unreachable Redis
        engine = await Engine.open(settings, metrics, store)
        metrics.info.set(1 if engine.store.kind != "memory" else 0)
        owners = engine.owners
        if owners.enabled:
            where = owners.url or "the address requests arrive on"
            log.info(
                f"session owners: {owners.mode} (this process: {where}; lease "
                f"{settings.owner_lease_s:g} s)"
            )
        app.state.engine = engine
        try:
            yield
        finally:
            hup()
            forwarder = getattr(app.state, "forwarder", None)  # OPTD_OWNERS=proxy
            if forwarder is not None:
                await forwarder.aclose()
            await engine.close()

    app = FastAPI(
        title="optd",
        version=__version__,
        description="Optimizer-as-a-service: Adam-family optimizer state behind /step.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: docs.install serves them from local files, no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keyring = keyring if auth_on else None
    errors.install(app)
    docs.install(app)
    openapi.install(app)
    for module in (sessions, step, shards, state, workers, history, optimizers):
        app.include_router(module.router, dependencies=[Depends(authorize)])
    app.include_router(health.router)
    ui.mount(app)  # public pages; their data calls carry the key
    # POST /step, the hot path, is matched first and skips FastAPI's dependency machinery
    # (step.fast_route authorizes itself); the APIRoute above keeps it in the OpenAPI doc.
    app.router.routes.insert(0, step.fast_route)
    # session owners (DESIGN §4): 307 to (or proxy for) the process that owns a session
    app.add_middleware(OwnerRouting)
    return app
