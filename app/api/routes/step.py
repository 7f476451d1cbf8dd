"""POST /v1/sessions/{id}/step: gradients in, new parameters out."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import openapi as doc
from app.api.deps import CallerDep, EngineDep, IfMatch, SettingsDep, authorize, if_match_version
from app.api.parse import parse_uint
from app.api.schemas import BarrierPending as Barrier
from app.api.schemas import StepRequest as StepBody
from app.api.schemas import StepResponse
from app.api.transport import (
    decode_gradients,
    decode_json_tensors,
    etag,
    idempotency,
    json_response,
    parse_json_object,
    read_body,
    request_format,
    response_dtype,
    response_format,
    tensor_response,
)
from app.core.config import Settings
from app.engine import DEFAULT_WAIT_S, BarrierPending, Caller, Engine, StepRequest, parse_sumsq
from app.problems import InvalidBody

router = APIRouter(prefix="/v1/sessions", tags=["step"])

STEP_HEADERS = {
    **doc.ETAG,
    "Optd-Version": "the new version",
    "Optd-Step": "the session's step count",
}
STEP_DOC = doc.body(
    StepBody,
    '`{"grads": {name: tensor}, "base_version", "worker", "loss"}`, or a safetensors file '
    "of the gradients with the options in Optd-* headers or `__metadata__` strings.",
) | {
    "parameters": [
        doc.query(
            "wait",
            "sync mode: seconds to wait for the round (default 30)",
            type="number",
            minimum=0,
        ),
        doc.query(
            "return",
            "`updated`: only the stepped parameters in the response",
            type="string",
            enum=["all", "updated"],
            default="all",
        ),
        doc.header("Prefer", "`return=minimal`: 204 without a body"),
        doc.IDEMPOTENCY_KEY,
        doc.header(
            "Optd-Base-Version",
            "safetensors bodies: the version the gradients were computed on",
            pattern="^[0-9]{1,18}$",
        ),
        doc.header("Optd-Worker", "safetensors bodies: the worker's id", maxLength=256),
        doc.RESPONSE_DTYPE,
        doc.header(
            "Optd-Loss",
            "safetensors bodies: the loss, a finite number",
            pattern=r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$",
        ),
    ]
}
STEP_RESPONSES = (
    doc.ok(
        200,
        "applied: the new version and parameters (JSON, or safetensors with the "
        "scalars in `__metadata__`)",
        StepResponse,
        binary=True,
        headers={**STEP_HEADERS, "Vary": "Accept"},
    )
    | doc.ok(
        202,
        "sync mode: the round did not close within ?wait= (Retry-After: 1); "
        "GET .../params?min_version= picks the result up",
        Barrier,
    )
    | doc.ok(
        204,
        "applied, with Prefer: return=minimal",
        headers={**STEP_HEADERS, "Preference-Applied": "return=minimal"},
    )
    | doc.problems(*doc.V1, 400, 404, 406, 409, 412, 413, 415, 422, 428)
)


def _int(value: Any, what: str) -> int | None:
    return None if value is None else parse_uint(value, what)


def _loss(value: Any) -> float | None:
    if value is None:
        return None
    try:
        loss = (
            float(value)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool)
            else None
        )
    except ValueError:
        loss = None
    if loss is None or not math.isfinite(loss):
        raise InvalidBody(f"loss must be a finite number, got {value!r}")
    return loss


def _wait(value: str | None) -> float:
    """?wait=S: how long a sync-mode step may wait for its round (default 30 s)."""
    if value is None:
        return DEFAULT_WAIT_S
    try:
        wait = float(value)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < math.inf:
        raise InvalidBody(f"?wait= takes a number of seconds >= 0, got {value!r}")
    return wait


def _worker(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidBody("worker must be a string of at most 256 characters")
    return value


def parse_step(request: Request, body: bytes, settings: Any) -> StepRequest:
    h = request.headers
    # The Optd-* headers are validated whatever the body (they are used for safetensors
    # bodies only): a malformed header is a 400 before anything else is looked at.
    _int(h.get("optd-base-version"), "Optd-Base-Version")
    _worker(h.get("optd-worker"))
    _loss(h.get("optd-loss"))
    prepared, sumsq, tokens = None, None, None
    if request_format(request) == "json":
        obj = parse_json_object(body, "step", STEP_KEYS)
        grads: dict[str, Any] = {}
        if "prepared" in obj:  # a sharded session's commit (DESIGN §3)
            prepared, sumsq, tokens = _commit_fields(obj)
        elif "sumsq" in obj or "tokens" in obj:
            raise InvalidBody("sumsq and tokens belong to a commit: send them with prepared")
        else:
            grads = decode_json_tensors(obj.get("grads"), "grads", settings)
        opts: dict[str, Any] = obj
    else:
        grads, metadata = decode_gradients(body, settings)
        opts = {
            "base_version": h.get("optd-base-version", metadata.get("base_version")),
            "worker": h.get("optd-worker", metadata.get("worker")),
            "loss": h.get("optd-loss", metadata.get("loss")),
        }
    return StepRequest(
        grads=grads,
        base_version=_int(opts.get("base_version"), "base_version"),
        worker=_worker(opts.get("worker")),
        loss=_loss(opts.get("loss")),
        prepared=prepared,
        sumsq=sumsq,
        tokens=tokens,
    )


STEP_KEYS = {"grads", "base_version", "worker", "loss", "prepared", "sumsq", "tokens"}


def _token(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise InvalidBody(f"{what} must be a token a prepare answered")
    return value


def _commit_fields(obj: dict[str, Any]) -> tuple[str, list[float], list[str] | None]:
    token = _token(obj["prepared"], "prepared")
    if "grads" in obj:
        raise InvalidBody("a commit carries no grads: the prepared part is the gradient")
    tokens = obj.get("tokens")
    if tokens is not None:
        if not isinstance(tokens, list) or not 0 < len(tokens) <= 64:
            raise InvalidBody("tokens must be every shard's prepared token, in shard order")
        tokens = [_token(t, "tokens[]") for t in tokens]
    return token, parse_sumsq(obj.get("sumsq")), tokens


async def _step(
    request: Request,
    sid: str,
    engine: Engine,
    settings: Settings,
    caller: Caller,
    if_match: int | None,
) -> Response:
    t0 = time.perf_counter()
    ret, wait = "all", DEFAULT_WAIT_S
    if request.scope["query_string"]:  # most steps have none: skip building QueryParams
        query = request.query_params
        ret = query.get("return", "all")
        if ret not in ("all", "updated"):
            raise InvalidBody("?return= takes 'all' or 'updated'")
        wait = _wait(query.get("wait"))
    minimal = "return=minimal" in request.headers.get("prefer", "")
    fmt = None if minimal else response_format(request)  # 406 before any work
    dtype = response_dtype(request)
    body = await read_body(request, settings)
    req = parse_step(request, body, settings)
    idem = idempotency(request, body)
    key, fingerprint = idem if idem is not None else (None, "")
    engine.metrics.phase("decode", time.perf_counter() - t0)
    out = await engine.step(
        sid, caller, req, if_match=if_match, idempotency_key=key, fingerprint=fingerprint, wait=wait
    )
    if isinstance(out, BarrierPending):
        status = {**out.round, "version": out.version, "have": out.have, "need": out.need}
        return json_response({"barrier": status}, status=202, headers={"Retry-After": "1"})
    t1 = time.perf_counter()
    headers = {
        "ETag": etag(out.version),
        "Optd-Version": str(out.version),
        "Optd-Step": str(out.step),
    }
    if out.replayed is not None:
        headers["Idempotent-Replayed"] = "true"
        # the replayed step's own version (the ETag is today's): a client acknowledging
        # steps by version needs it, with `Prefer: return=minimal` too (no body)
        headers["Optd-Replayed-Version"] = str(out.replayed["version"])
    if fmt is None:
        engine.metrics.step_seconds.observe(time.perf_counter() - t0)
        return Response(status_code=204, headers=headers | {"Preference-Applied": "return=minimal"})
    params = out.params
    if ret == "updated":
        params = {n: params[n] for n in out.updated}
    response = tensor_response(
        fmt, out.summary(), params, headers=headers, metrics=engine.metrics, dtype=dtype
    )
    engine.metrics.phase("encode", time.perf_counter() - t1)
    engine.metrics.step_seconds.observe(time.perf_counter() - t0)  # /ui: p50/p90
    return response


@router.post(
    "/{sid}/step",
    operation_id="step",
    summary="Apply gradients",
    description="Applies the gradients of all parameters or a subset (absent ones are "
    "untouched, each keeps its own step count, as torch skips params whose grad is None) "
    "and answers the new version and parameters. Async sessions apply each step on "
    "arrival (`base_version` older than `max_staleness` is 409 stale-gradient); sync "
    "sessions average the gradients of `workers` distinct workers for the same "
    "`base_version` and answer every worker the same parameters. Durable before the "
    "answer; with an `Idempotency-Key`, applied at most once. On a shard session of a "
    "sharded session, the JSON body may instead be the commit of a prepared part "
    "(`ShardCommit`: `prepared`, `sumsq`; needs `If-Match`, else 428; DESIGN §3).",
    responses=STEP_RESPONSES,
    openapi_extra=STEP_DOC,
)
async def step(
    sid: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    caller: CallerDep,
    if_match: IfMatch,
) -> Response:
    # The documented operation (no docstring: it would become the OpenAPI description).
    # Requests are served by `fast_route` below, placed ahead of it (app.main), which does
    # what FastAPI does here: `authorize` (the router's dependency), then If-Match; this
    # one answers only when that route is not installed.
    return await _step(request, sid, engine, settings, caller, if_match)


async def _step_fast(request: Request) -> Response:
    # FastAPI's per-request dependency solving (Header() parsing through pydantic, the
    # dependency cache, exit stacks) and its router were more than half of a small step's
    # time outside the engine (~130 of ~240 us at 1e3 parameters; bench/service/profile.py).
    # The same checks, in the same order, are plain calls here.
    state = request.app.state
    caller = await authorize(request, request.headers.get("authorization"))
    if_match = if_match_version(request.headers.get("if-match"))
    sid: str = request.path_params["sid"]
    return await _step(request, sid, state.engine, state.settings, caller, if_match)


fast_route = Route(
    f"{router.prefix}/{{sid}}/step", _step_fast, methods=["POST"], include_in_schema=False
)
