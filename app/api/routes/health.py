"""Liveness, readiness (the store answers) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import PlainTextResponse, Response

from app.api import openapi as doc
from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import Health, Ready
from app.api.transport import json_response

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    operation_id="healthz",
    summary="Liveness",
    description="The process serves requests (it does not look at the store). No key needed.",
    responses=doc.ok(200, "alive", Health),
)
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness",
    description="The store answers: 503 store-unavailable (with Retry-After) while it does "
    "not, so a load balancer sends no traffic here. No key needed.",
    responses=doc.ok(200, "ready", Ready) | doc.problems(503),
)
async def readyz(engine: EngineDep) -> Response:
    kind = await engine.ready()  # StoreUnavailable -> 503 problem with Retry-After
    return json_response({"status": "ready", "store": kind})


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    description="Steps, step latency by phase, bytes, conflicts, stale refusals, sessions, "
    "in the Prometheus text format. No key needed unless OPTD_METRICS_AUTH=1.",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def metrics(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    if settings.metrics_auth and request.app.state.keyring is not None:
        # any valid key (metrics name no tenant's data); not rate-limited, so a scraper
        # never eats a tenant's request budget
        request.app.state.keyring.authenticate(request.headers.get("authorization"))
    return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)
