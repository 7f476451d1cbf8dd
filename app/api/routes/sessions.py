"""Sessions: create, list, describe, patch, delete."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app import sessions
from app.api.deps import EngineDep, IfMatch, SettingsDep
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
from app.core.auth import TENANT_LABEL, current_caller
from app.problems import InvalidBody, InvalidConfig
from app.session import SessionMeta

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
async def create_session(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
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
    sid, version, meta, replayed = await sessions.create(
        engine, config, params, idempotency(request, body)
    )
    headers = {"Location": f"/v1/sessions/{sid}", "ETag": etag(version)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(sessions.describe(sid, version, meta), status=201, headers=headers)


@router.get("")
async def list_sessions(
    engine: EngineDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    label: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None,
) -> Response:
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidBody(f"label filter must look like key=value, got {item!r}")
        labels[key] = value
    for key in labels:
        if key.startswith("optd/"):
            raise InvalidBody(f"label {key!r}: the prefix optd/ is reserved")
    caller = current_caller.get()
    if caller.tenant is not None and not caller.admin:
        labels[TENANT_LABEL] = caller.tenant  # a tenant lists its own sessions only
    page, next_cursor = await engine.store.list(cursor, limit, labels or None)
    out = []
    for summary in page:
        meta = SessionMeta.from_bytes(summary.meta)
        out.append(sessions.describe(summary.id, summary.version, meta) | {"params": None})
    return json_response({"sessions": out, "next_cursor": next_cursor})


@router.get("/{sid}")
async def get_session(sid: str, engine: EngineDep) -> Response:
    stored, meta = await engine.load(sid, [])
    return json_response(
        sessions.describe(sid, stored.version, meta), headers={"ETag": etag(stored.version)}
    )


@router.patch(
    "/{sid}",
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}
    },
)
async def patch_session(
    sid: str, request: Request, engine: EngineDep, settings: SettingsDep, if_match: IfMatch
) -> Response:
    body = await read_body(request, settings)
    if request_format(request) != "json":
        raise InvalidBody("PATCH takes a JSON object")
    obj = parse_json_object(body, "patch")
    version, meta = await sessions.patch(engine, sid, obj, if_match)
    return json_response(sessions.describe(sid, version, meta), headers={"ETag": etag(version)})


@router.delete("/{sid}", status_code=204)
async def delete_session(sid: str, engine: EngineDep) -> Response:
    await sessions.delete(engine, sid)
    return Response(status_code=204)
