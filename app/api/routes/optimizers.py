"""GET /v1/optimizers, generated from the registry."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.transport import json_response
from app.optim import list_optimizers
from app.optim.schedules import SCHEDULE_NAMES

router = APIRouter(prefix="/v1", tags=["optimizers"])


@router.get("/optimizers")
async def optimizers() -> Response:
    return json_response({"optimizers": list_optimizers(), "schedules": list(SCHEDULE_NAMES)})
