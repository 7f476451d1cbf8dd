"""POST /v1/sessions/{id}/prepare: the first phase of a sharded session's step (DESIGN §3).

The commit is an ordinary POST .../step with `{"prepared", "sumsq"}` (routes/step.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api import openapi as doc
from app.api.deps import CallerDep, EngineDep, SettingsDep
from app.api.schemas import Prepare, Prepared
from app.api.transport import (
    decode_gradients,
    decode_json_tensors,
    json_response,
    parse_json_object,
    read_body,
    request_format,
)

router = APIRouter(prefix="/v1/sessions", tags=["step"])


@router.post(
    "/{sid}/prepare",
    operation_id="prepare",
    summary="Prepare a shard's part of a step",
    description="A shard session (`{id}-s{k}`) checks its part of a sharded session's "
    "gradient exactly as a step would, keeps it for its commit (OPTD_PREPARE_TTL_S, in "
    "this process: the shard's owner) and answers the part's chunked squared norms and "
    "the shard's version. Nothing changes. The commit is `POST .../step` with "
    '`{"prepared": token, "sumsq": [every shard\'s, in order]}` and `If-Match` (DESIGN §3).',
    responses=doc.ok(200, "the part is kept; commit it with the token", Prepared)
    | doc.problems(*doc.V1, 400, 404, 409, 413, 415, 422),
    openapi_extra=doc.body(
        Prepare,
        '`{"grads": {name: 1-D piece}}` (`{"grads": {}}`: no gradient for this shard in '
        "this step), or a safetensors file of the pieces.",
    ),
)
async def prepare(
    sid: str, request: Request, engine: EngineDep, settings: SettingsDep, caller: CallerDep
) -> Response:
    body = await read_body(request, settings)
    if request_format(request) == "json":
        obj = parse_json_object(body, "prepare", {"grads"})
        grads = decode_json_tensors(obj.get("grads"), "grads", settings)
    else:
        grads, _ = decode_gradients(body, settings)
    return json_response(await engine.prepare(sid, caller, grads))
