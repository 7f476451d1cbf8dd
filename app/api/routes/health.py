"""Liveness, readiness (the store answers) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.api.deps import EngineDep, SettingsDep
from app.api.transport import json_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(engine: EngineDep) -> Response:
    kind = await engine.ready()  # StoreUnavailable -> 503 problem with Retry-After
    return json_response({"status": "ready", "store": kind})


@router.get("/metrics")
async def metrics(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    if settings.metrics_auth and request.app.state.keyring is not None:
        # any valid key (metrics name no tenant's data); not rate-limited, so a scraper
        # never eats a tenant's request budget
        request.app.state.keyring.authenticate(request.headers.get("authorization"))
    return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)
