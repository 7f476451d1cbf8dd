"""Parameters and checkpoints: GET/PUT .../params, GET/PUT .../state."""

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
    json_response,
    parse_json_object,
    read_body,
    request_format,
    response_format,
    tensor_response,
)
from app.codec import safetensors
from app.ids import check_sid
from app.problems import InvalidBody

router = APIRouter(prefix="/v1/sessions", tags=["params and state"])

TENSORS_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-safetensors": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}
CHECKPOINT_DTYPES = (*safetensors.FLOAT_DTYPES, "I64", "I32")


@router.get("/{sid}/params")
async def get_params(
    sid: str,
    request: Request,
    engine: EngineDep,
    caller: CallerDep,
    names: Annotated[str | None, Query(description="comma-separated subset")] = None,
    min_version: Annotated[int | None, Query(ge=0)] = None,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for min_version")] = 0.0,
) -> Response:
    fmt = response_format(request)
    wanted = [n for n in names.split(",") if n] if names else None
    worker = request.headers.get("optd-worker")
    version, params = await engine.get_params(sid, caller, wanted, min_version, wait, worker)
    return tensor_response(
        fmt, {"version": version}, params, headers={"ETag": etag(version)}, metrics=engine.metrics
    )


@router.put("/{sid}/params", openapi_extra=TENSORS_DOC)
async def put_params(
    sid: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    caller: CallerDep,
    if_match: IfMatch,
) -> Response:
    body = await read_body(request, settings)
    if request_format(request) == "json":
        params = decode_json_tensors(
            parse_json_object(body, "params", {"params"}).get("params"), "params", settings
        )
    else:
        params, _ = decode_safetensors(body, settings)
    version = await engine.put_params(sid, caller, params, if_match)
    return json_response({"version": version}, headers={"ETag": etag(version)})


@router.get("/{sid}/state")
async def get_state(sid: str, request: Request, engine: EngineDep, caller: CallerDep) -> Response:
    fmt = response_format(request)
    version, doc, tensors = await engine.export_state(sid, caller)
    fields: dict[str, Any] = {"version": version}
    if fmt == "json":
        fields["meta"] = doc
    else:
        fields["optd"] = orjson.dumps(doc).decode()
    return tensor_response(
        fmt, fields, tensors, key="tensors", headers={"ETag": etag(version)}, metrics=engine.metrics
    )


@router.put("/{sid}/state", openapi_extra=TENSORS_DOC)
async def put_state(
    sid: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    caller: CallerDep,
    if_match: IfMatch,
) -> Response:
    check_sid(sid)
    body = await read_body(request, settings)
    if request_format(request) == "json":
        obj = parse_json_object(body, "checkpoint", {"version", "meta", "tensors"})
        tensors = decode_json_tensors(obj.get("tensors"), "tensors", settings)
        doc = obj.get("meta")
    else:
        tensors, metadata = decode_safetensors(body, settings, CHECKPOINT_DTYPES)
        if "optd" not in metadata:
            raise InvalidBody(
                'checkpoint: __metadata__["optd"] is missing; export with GET .../state'
            )
        try:
            doc = orjson.loads(metadata["optd"])
        except orjson.JSONDecodeError:
            raise InvalidBody('checkpoint: __metadata__["optd"] is not JSON') from None
    version, created = await engine.import_state(sid, caller, doc, tensors, if_match)
    return json_response(
        {"version": version, "created": created},
        status=201 if created else 200,
        headers={"ETag": etag(version), **({"Location": f"/v1/sessions/{sid}"} if created else {})},
    )
