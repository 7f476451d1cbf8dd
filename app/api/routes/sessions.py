"""Sessions: create, list, describe, patch, delete."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.deps import CallerDep, EngineDep, IfMatch, SettingsDep
from app.api.transport import (
    decode_json_tensors,
    decode_safetensors,
    etag,
    idempotency,
    json_response,
    parse_json_object,
    read_body,
    request_format,
)
from app.problems import InvalidBody, InvalidConfig

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

CREATE_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-safetensors": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "JSON config with inline `params`, or a safetensors file of the "
        'params whose `__metadata__["config"]` holds the JSON config.',
    }
}


@router.post("", status_code=201, openapi_extra=CREATE_DOC)
async def create_session(
    request: Request, engine: EngineDep, settings: SettingsDep, caller: CallerDep
) -> Response:
    body = await read_body(request, settings)
    if request_format(request) == "json":
        obj = parse_json_object(body, "session")
        params = decode_json_tensors(obj.get("params"), "params", settings)
        config: dict[str, Any] = obj
    else:
        params, metadata = decode_safetensors(body, settings)
        try:
            config = orjson.loads(metadata.get("config", "{}"))
        except orjson.JSONDecodeError:
            raise InvalidBody('__metadata__["config"] must be a JSON object string') from None
        if not isinstance(config, dict):
            raise InvalidConfig('__metadata__["config"] must be a JSON object')
    sid, version, info, replayed = await engine.create_session(
        caller, config, params, idempotency(request, body)
    )
    headers = {"Location": f"/v1/sessions/{sid}", "ETag": etag(version)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(info, status=201, headers=headers)


@router.get("")
async def list_sessions(
    engine: EngineDep,
    caller: CallerDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    label: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None,
) -> Response:
    out, next_cursor = await engine.list_sessions(caller, cursor, limit, label or [])
    return json_response({"sessions": out, "next_cursor": next_cursor})


@router.get("/{sid}")
async def get_session(sid: str, engine: EngineDep, caller: CallerDep) -> Response:
    version, info = await engine.describe_session(sid, caller)
    return json_response(info, headers={"ETag": etag(version)})


@router.patch(
    "/{sid}",
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}
    },
)
async def patch_session(
    sid: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    caller: CallerDep,
    if_match: IfMatch,
) -> Response:
    body = await read_body(request, settings)
    if request_format(request) != "json":
        raise InvalidBody("PATCH takes a JSON object")
    obj = parse_json_object(body, "patch")
    version, info = await engine.patch_session(sid, caller, obj, if_match)
    return json_response(info, headers={"ETag": etag(version)})


@router.delete("/{sid}", status_code=204)
async def delete_session(sid: str, engine: EngineDep, caller: CallerDep) -> Response:
    await engine.delete_session(sid, caller)
    return Response(status_code=204)
