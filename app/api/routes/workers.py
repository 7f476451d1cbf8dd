"""The workers of a sync session (elastic rounds): join or heartbeat, leave, list."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api import openapi as doc
from app.api.deps import CallerDep, EngineDep
from app.api.transport import json_response

router = APIRouter(prefix="/v1/sessions", tags=["workers"])


@router.put(
    "/{sid}/workers/{worker}",
    operation_id="joinWorker",
    summary="Join a sync session's workers, or renew the lease",
    description="Joins (or heartbeats) a worker of a sync session: it is a live member for "
    "`worker_lease_s` seconds. The answer names the version to compute the next gradient "
    "on (the round to join), the open round and the lease (DESIGN §4, elastic rounds).",
    responses=doc.ok(200, "the worker's version, the open round and the lease")
    | doc.problems(*doc.V1, 400, 404, 422),
)
async def join_worker(sid: str, worker: str, engine: EngineDep, caller: CallerDep) -> Response:
    return json_response(await engine.join_worker(sid, caller, worker))


@router.delete(
    "/{sid}/workers/{worker}",
    status_code=204,
    operation_id="leaveWorker",
    summary="Leave a sync session's workers",
    description="The worker stops being a member now: rounds stop waiting for it, and a "
    "round that was waiting only for it may close.",
    responses=doc.ok(204, "left") | doc.problems(*doc.V1, 400, 404, 422),
)
async def leave_worker(sid: str, worker: str, engine: EngineDep, caller: CallerDep) -> Response:
    await engine.leave_worker(sid, caller, worker)
    return Response(status_code=204)


@router.get(
    "/{sid}/workers",
    operation_id="listWorkers",
    summary="List a sync session's workers and its open round",
    description="Every member with whether it is live, seconds since it was last heard "
    "from, rounds contributed and its last version; and the open round's version, have, "
    "need, min, contributors, missing and closes_in_s.",
    responses=doc.ok(200, "members and the open round") | doc.problems(*doc.V1, 404, 422),
)
async def list_workers(sid: str, engine: EngineDep, caller: CallerDep) -> Response:
    return json_response(await engine.list_workers(sid, caller))
