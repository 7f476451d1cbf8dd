"""GET /v1/optimizers, generated from the registry."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api import openapi as doc
from app.api.schemas import Optimizers
from app.api.transport import json_response
from app.engine import Engine

router = APIRouter(prefix="/v1", tags=["optimizers"])


@router.get(
    "/optimizers",
    operation_id="listOptimizers",
    summary="List the optimizers",
    description="Every optimizer a session can use, with its hyperparameters' JSON schema "
    "and defaults (torch's), generated from the registry.",
    responses=doc.ok(200, "the optimizers and schedules", Optimizers) | doc.problems(*doc.V1),
)
async def optimizers() -> Response:
    return json_response(Engine.optimizers())
