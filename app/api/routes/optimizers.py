"""GET /v1/optimizers, generated from the registry."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.transport import json_response
from app.engine import Engine

router = APIRouter(prefix="/v1", tags=["optimizers"])


@router.get("/optimizers")
async def optimizers() -> Response:
    return json_response(Engine.optimizers())
