"""The workers of a sync session (elastic rounds): join or heartbeat, leave, list."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import CallerDep, EngineDep
from app.api.transport import json_response

router = APIRouter(prefix="/v1/sessions", tags=["workers"])


@router.put("/{sid}/workers/{worker}")
async def join_worker(sid: str, worker: str, engine: EngineDep, caller: CallerDep) -> Response:
    """Join the session's workers, or renew the lease (a heartbeat). The answer names the
    version to compute the next gradient on (the round to join) and the open round."""
    return json_response(await engine.join_worker(sid, caller, worker))


@router.delete("/{sid}/workers/{worker}", status_code=204)
async def leave_worker(sid: str, worker: str, engine: EngineDep, caller: CallerDep) -> Response:
    """Leave now: rounds stop waiting for this worker."""
    await engine.leave_worker(sid, caller, worker)
    return Response(status_code=204)


@router.get("/{sid}/workers")
async def list_workers(sid: str, engine: EngineDep, caller: CallerDep) -> Response:
    """Every member with whether it is live, and the open round's have/need/closes_in_s."""
    return json_response(await engine.list_workers(sid, caller))
