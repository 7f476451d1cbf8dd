"""Parameters and checkpoints: GET/PUT .../params, GET/PUT .../state."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from app.api import openapi as doc
from app.api.deps import CallerDep, EngineDep, IfMatch, SettingsDep
from app.api.schemas import Checkpoint, Params, ParamsPut, StateWritten, Version
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

TENSOR_HEADERS = {**doc.ETAG, "Vary": "Accept"}
CHECKPOINT_DTYPES = (*safetensors.FLOAT_DTYPES, "I64", "I32")


@router.get(
    "/{sid}/params",
    operation_id="getParams",
    summary="Read the parameters",
    description="The current parameters (or the `?names=` subset), in JSON or, with "
    "`Accept: application/x-safetensors`, as a safetensors file whose `__metadata__` holds "
    "the version. `?min_version=N&wait=S` long-polls until the session reaches version N "
    "or S seconds pass (then it answers the current version: compare).",
    responses=doc.ok(
        200, "the version and the parameters", Params, binary=True, headers=TENSOR_HEADERS
    )
    | doc.problems(*doc.V1, 400, 404, 406, 422),
)
async def get_params(
    sid: str,
    request: Request,
    engine: EngineDep,
    caller: CallerDep,
    names: Annotated[
        str | None, Query(description="comma-separated subset; an unknown name is 422")
    ] = None,
    min_version: Annotated[int | None, Query(ge=0)] = None,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for min_version")] = 0.0,
    optd_response_dtype: Annotated[
        Literal["float32", "bfloat16"] | None,
        Header(description=doc.RESPONSE_DTYPE["description"]),
    ] = None,
) -> Response:
    fmt = response_format(request)
    dtype = optd_response_dtype or "float32"
    wanted = [n for n in names.split(",") if n] if names else None
    worker = request.headers.get("optd-worker")
    version, params = await engine.get_params(sid, caller, wanted, min_version, wait, worker)
    return tensor_response(
        fmt,
        {"version": version},
        params,
        headers={"ETag": etag(version)},
        metrics=engine.metrics,
        dtype=dtype,
    )


@router.put(
    "/{sid}/params",
    operation_id="putParams",
    summary="Overwrite parameters",
    description="Replaces the values of every given parameter (shapes unchanged), keeping "
    "the optimizer state; version + 1. `If-Match` makes it conditional.",
    responses=doc.ok(200, "the new version", Version, headers=doc.ETAG)
    | doc.problems(*doc.V1, 400, 404, 409, 412, 413, 415, 422),
    openapi_extra=doc.body(ParamsPut, "JSON `{params}` or a safetensors file of them"),
)
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


@router.get(
    "/{sid}/state",
    operation_id="getState",
    summary="Export a checkpoint",
    description="The full state: params and every optimizer slot as tensors "
    "`<slot>/<param>` (`param/w`, `exp_avg/w`, ...), step counts and the config in the meta "
    'document (`"meta"` in JSON, `__metadata__["optd"]` in safetensors). PUT it back to '
    "restore.",
    responses=doc.ok(200, "the checkpoint", Checkpoint, binary=True, headers=TENSOR_HEADERS)
    | doc.problems(*doc.V1, 404, 406),
)
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


@router.put(
    "/{sid}/state",
    operation_id="putState",
    summary="Restore a checkpoint",
    description="Restores a checkpoint exported by GET .../state into the session (200, "
    "version + 1) or, when no session has this id, creates it under this id (201, version "
    "0). The layout is validated before anything is allocated.",
    responses=doc.ok(200, "restored", StateWritten, headers=doc.ETAG)
    | doc.ok(
        201,
        "created under this id",
        StateWritten,
        headers={**doc.ETAG, "Location": "/v1/sessions/{id}"},
    )
    | doc.problems(*doc.V1, 400, 404, 409, 412, 413, 415, 422),
    openapi_extra=doc.body(Checkpoint, "a checkpoint as GET .../state exports it"),
)
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
