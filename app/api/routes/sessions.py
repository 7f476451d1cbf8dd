"""Sessions: create, list, describe, patch, delete."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import StringConstraints, ValidationError
from starlette.responses import Response

from app.api import openapi as doc
from app.api.deps import CallerDep, EngineDep, IfMatch, SettingsDep
from app.api.schemas import SessionCreate, SessionInfo, SessionList, SessionPatch
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

# OpenAPI links from a created session (its `id`) to what can be done with it: they let
# clients and schemathesis's stateful tests follow create -> use.
SID = {"sid": "$response.body#/id"}
CREATED_LINKS = {
    name: {"operationId": op, "parameters": SID}
    for name, op in {
        "GetSession": "getSession",
        "PatchSession": "patchSession",
        "DeleteSession": "deleteSession",
        "Step": "step",
        "Prepare": "prepare",
        "GetParams": "getParams",
        "PutParams": "putParams",
        "GetState": "getState",
        "PutState": "putState",
        "ListWorkers": "listWorkers",
        "GetHistory": "getHistory",
        "StreamHistory": "streamHistory",
    }.items()
}
SESSION_HEADERS = {"ETag": 'the version, quoted ("0")'}


@router.post(
    "",
    status_code=201,
    operation_id="createSession",
    summary="Create a session",
    description="Creates a session: an optimizer, its hyperparameters, schedule, groups, "
    "mode and state dtype, with its initial parameters, in JSON (inline `params`) or as a "
    'safetensors file of the parameters whose `__metadata__["config"]` holds the same JSON '
    "config without `params`. The session id is generated; with an `Idempotency-Key`, "
    "a retry answers the same session.",
    responses=doc.ok(
        201,
        "created; the body is the session's info",
        SessionInfo,
        headers={"Location": "/v1/sessions/{id}", **SESSION_HEADERS},
        links=CREATED_LINKS,
    )
    | doc.problems(*doc.V1, 400, 409, 413, 415, 422),
    openapi_extra=doc.body(SessionCreate, "the config and the initial parameters")
    | {"parameters": [doc.IDEMPOTENCY_KEY]},
)
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


@router.get(
    "",
    operation_id="listSessions",
    summary="List sessions",
    description="The sessions the caller may see (a tenant its own, an admin all), in a "
    "stable order, a page at a time: pass `next_cursor` back as `?cursor=` until it is "
    "null. `?label=k=v` (repeatable) keeps sessions carrying every such label.",
    responses=doc.ok(200, "a page of sessions (their `params` are null)", SessionList)
    | doc.problems(*doc.V1, 400),
)
async def list_sessions(
    engine: EngineDep,
    caller: CallerDep,
    cursor: Annotated[
        str | None,
        Query(description="next_cursor of the previous page", pattern="^[A-Za-z0-9_-]*$"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    label: Annotated[
        list[Annotated[str, StringConstraints(pattern="^[^=]+=")]] | None,
        Query(description="key=value, repeatable; the prefix optd/ is reserved (400)"),
    ] = None,
) -> Response:
    out, next_cursor = await engine.list_sessions(caller, cursor, limit, label or [])
    return json_response({"sessions": out, "next_cursor": next_cursor})


@router.get(
    "/{sid}",
    operation_id="getSession",
    summary="Describe a session",
    description="Config, version, step counts, parameter names and shapes, size, last loss "
    "and the current learning rate (after the schedule).",
    responses=doc.ok(200, "the session's info", SessionInfo, headers=SESSION_HEADERS)
    | doc.problems(*doc.V1, 404),
)
async def get_session(sid: str, engine: EngineDep, caller: CallerDep) -> Response:
    version, info = await engine.describe_session(sid, caller)
    return json_response(info, headers={"ETag": etag(version)})


@router.patch(
    "/{sid}",
    operation_id="patchSession",
    summary="Change a session's settings",
    description="Changes hyperparameters (merged), schedule, clipping, staleness, labels or "
    "TTL between steps; optimizer, dtype and groups are fixed (422). A slot a change needs "
    "(amsgrad switched on) starts at zeros, as in torch. `If-Match` makes it conditional.",
    responses=doc.ok(200, "the session's new info", SessionInfo, headers=doc.ETAG)
    | doc.problems(*doc.V1, 400, 404, 409, 412, 413, 415, 422),
    openapi_extra=doc.body(SessionPatch, "the settings to change", binary=False),
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
    try:
        # the body's shape is checked before the session is looked at, so a malformed PATCH
        # is 422 whatever its If-Match (the engine checks the values against the session)
        SessionPatch.model_validate(obj)
    except ValidationError as exc:
        errors = [{"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]} for e in exc.errors()]
        raise InvalidConfig(
            f"patch: {errors[0]['loc']}: {errors[0]['msg']}", errors=errors
        ) from None
    version, info = await engine.patch_session(sid, caller, obj, if_match)
    return json_response(info, headers={"ETag": etag(version)})


@router.delete(
    "/{sid}",
    status_code=204,
    operation_id="deleteSession",
    summary="Delete a session",
    description="Removes the session and all its keys; its quota share is given back.",
    responses=doc.ok(204, "deleted") | doc.problems(*doc.V1, 404),
)
async def delete_session(sid: str, engine: EngineDep, caller: CallerDep) -> Response:
    await engine.delete_session(sid, caller)
    return Response(status_code=204)
