"""Bodies in and out: size limits, JSON or safetensors tensors, negotiated responses.

Tensor data never goes through pydantic: JSON is parsed by orjson and turned into
numpy arrays in one call per tensor; safetensors is decoded zero-copy.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import Request
from starlette.responses import Response

from app.api.parse import parse_uint
from app.codec import compress, json_tensors, negotiate, safetensors
from app.core.config import Settings
from app.metrics import Metrics
from app.problems import InvalidBody, RequestTimeout, TooLarge, UnsupportedMediaType

Format = Literal["json", "safetensors"]

_VARY = (b"vary", b"Accept, Optd-Response-Dtype")
RESPONSE_DTYPE = "optd-response-dtype"
"""Header asking for parameters in bfloat16 (`Optd-Response-Dtype: bfloat16`; DESIGN §3)."""
_FIRST_ROOM = 1 << 20


async def read_body(request: Request, settings: Settings) -> bytes:
    """The whole body, refusing with 413 as soon as it is known to exceed the limit, and
    with 408 when it arrives slower than the floor (`_deadline`).

    JSON bodies have their own, smaller limit (`OPTD_MAX_JSON_MB`): parsing JSON costs
    several times the body in memory, safetensors costs nothing beyond the body.
    """
    limit, what = _limit(request, settings)
    declared = request.headers.get("content-length")
    size = None if declared is None else parse_uint(declared, "Content-Length")
    if size is not None and size > limit:
        raise TooLarge(f"body of {declared} bytes exceeds {what}")
    # The body goes into one buffer that BytesIO hands over as the bytes object without a
    # copy (CPython shares its buffer when nothing else holds it), and each chunk is freed
    # once copied: the body is in memory about once. A list of chunks joined at the end
    # held it twice, in blocks too small to reuse (+1x the body in RSS, measured). With a
    # declared length the buffer grows by doubling up to it, never ahead of what arrived,
    # so a client that declares much and sends little costs little.
    out = io.BytesIO()
    room = 0
    got = 0
    start = asyncio.get_running_loop().time()
    rate = settings.body_min_rate_kib * 1024
    try:
        async with asyncio.timeout(start + settings.body_timeout_s) as deadline:
            async for chunk in request.stream():
                got += len(chunk)
                if got > limit:
                    raise TooLarge(f"body exceeds {what}")
                if size is not None and got > room:
                    room = min(max(2 * room, got, _FIRST_ROOM), max(size, got))
                    out.seek(room - 1)
                    out.write(b"\0")  # grow to `room` once, then fill in place
                    out.seek(got - len(chunk))
                out.write(chunk)
                if rate:
                    deadline.reschedule(start + settings.body_timeout_s + got / rate)
    except TimeoutError:
        raise RequestTimeout(
            f"the body arrived too slowly ({got} bytes in "
            f"{asyncio.get_running_loop().time() - start:.1f} s): it must arrive within "
            f"OPTD_BODY_TIMEOUT_S ({settings.body_timeout_s:g} s) plus one second per "
            f"OPTD_BODY_MIN_RATE_KIB ({settings.body_min_rate_kib:g} KiB) received"
        ) from None
    out.truncate(got)
    body = out.getvalue()
    out.close()
    metrics: Metrics = request.app.state.metrics
    metrics.bytes_in.inc(len(body))
    return body


def _limit(request: Request, settings: Settings) -> tuple[int, str]:
    """The body limit for this request's Content-Type, and how a 413 names it."""
    try:
        fmt = request_format(request)
    except UnsupportedMediaType:
        fmt = "json"  # refused with 415 by the route, once it has the (small) body
    if fmt == "safetensors" or settings.max_body_mb <= settings.max_json_mb:
        mb = settings.max_body_mb
        how = "send fewer parameters per request or raise the limit"
        return settings.max_body_bytes, f"OPTD_MAX_BODY_MB ({mb:g} MiB); {how}"
    mb = settings.max_json_mb
    return int(mb * 2**20), (
        f"the JSON limit OPTD_MAX_JSON_MB ({mb:g} MiB); a JSON body costs a few times its "
        "size in memory, so send large tensors as safetensors (Content-Type: "
        f"application/x-safetensors, up to OPTD_MAX_BODY_MB, {settings.max_body_mb:g} MiB) "
        "or raise the limit"
    )


def request_format(request: Request) -> Format:
    return negotiate.request_format(request.headers.get("content-type"))


def response_format(request: Request) -> Format:
    return _response_format(request.headers.get("accept"))


# Clients send the same few Accept values on every request; parsing one costs more than
# the lookup. Refusals (NotAcceptable) are raised, so never cached.
_response_format = functools.lru_cache(maxsize=64)(negotiate.response_format)


def response_dtype(request: Request) -> str:
    """`Optd-Response-Dtype`: `float32` (the default: the state's own dtype) or
    `bfloat16` (parameters rounded to nearest even; half the bytes of float32)."""
    raw = request.headers.get(RESPONSE_DTYPE)
    if raw is None:
        return "float32"
    value = raw.strip().lower()
    if value not in compress.RESPONSE_DTYPES:
        raise InvalidBody(
            f"Optd-Response-Dtype {raw[:64]!r} is not supported; use bfloat16 or float32"
        )
    return value


def decode_gradients(
    body: bytes, settings: Settings
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A safetensors body of gradients: float tensors, or int8-block quantized ones
    (app.codec.compress), which come back dequantized to float32."""
    tensors, metadata = decode_safetensors(body, settings, (*safetensors.FLOAT_DTYPES, "I8"))
    return compress.dequantize(tensors, metadata), metadata


# The member of each JSON body that holds its tensors: in large bodies their arrays are
# parsed straight into numpy (app.codec.json_numbers) instead of into Python floats.
_TENSORS_AT = {
    "session": "params",
    "step": "grads",
    "prepare": "grads",
    "params": "params",
    "checkpoint": "tensors",
}


def parse_json_object(body: bytes, what: str, allowed: set[str] | None = None) -> dict[str, Any]:
    obj = json_tensors.parse_body(body, tensors_at=_TENSORS_AT.get(what))
    if not isinstance(obj, dict):
        raise InvalidBody(f"{what}: the body must be a JSON object")
    unknown = set(obj) - allowed if allowed is not None else set()
    if unknown:
        raise InvalidBody(
            f"{what}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(allowed or ()))}"
        )
    return obj


def decode_json_tensors(obj: Any, what: str, settings: Settings) -> dict[str, np.ndarray]:
    if obj is None:
        raise InvalidBody(f"{what}: missing; send {{{what!r}: {{name: tensor}}}}")
    return json_tensors.decode_tensors(
        obj, what=what, max_tensors=settings.max_tensors, max_name_bytes=settings.max_name_bytes
    )


def decode_safetensors(
    body: bytes, settings: Settings, allowed: tuple[str, ...] = safetensors.FLOAT_DTYPES
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    return safetensors.decode(
        body,
        max_header_bytes=settings.max_header_bytes,
        max_tensors=settings.max_tensors,
        max_name_bytes=settings.max_name_bytes,
        allowed_dtypes=allowed,
    )


def tensor_response(
    fmt: Format,
    fields: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    key: str = "params",
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
    dtype: str = "float32",
) -> Response:
    """JSON `{...fields, key: {name: tensor}}`, or safetensors with the fields as
    `__metadata__` strings (JSON-encoded when not already strings). `dtype="bfloat16"`
    rounds the tensors to bfloat16 (BF16 in safetensors, `"dtype": "bfloat16"` in JSON)."""
    if fmt == "json":
        encoded = json_tensors.encode_tensors(tensors)
        if dtype == "bfloat16":
            for name, arr in tensors.items():
                encoded[name] = {**encoded[name], "dtype": "bfloat16"}
                encoded[name]["data"] = compress.bfloat16_round(arr).reshape(-1)
        body = json_tensors.dumps({**fields, key: encoded})
        media = negotiate.JSON
    else:
        if dtype == "bfloat16":
            tensors = {name: compress.bfloat16_bits(arr) for name, arr in tensors.items()}
        meta = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in fields.items()}
        body = safetensors.encode(tensors, meta)
        media = negotiate.SAFETENSORS
    if metrics is not None:
        metrics.bytes_out.inc(len(body))
    out = Response(body, status_code=status, media_type=media, headers=dict(headers or {}))
    out.raw_headers.append(_VARY)  # what out.headers["Vary"] = ... appends, without the scan
    return out


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json_tensors.dumps(obj),
        status_code=status,
        media_type=negotiate.JSON,
        headers=dict(headers or {}),
    )


def idempotency(request: Request, body: bytes) -> tuple[str, str] | None:
    """The request's Idempotency-Key and a fingerprint of what it asks for (method, path,
    content type, body): the same key with another fingerprint is a client bug (422)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= 255:
        raise InvalidBody("Idempotency-Key must be 1 to 255 characters")
    # sha256, not blake2b: OpenSSL's runs on the CPU's SHA instructions, ~3x faster on a
    # 40 MB body (25 vs 80 ms at 1e7 parameters, most of what a step spends outside it)
    h = hashlib.sha256()
    ctype = request.headers.get("content-type")
    h.update(f"{request.method} {request.url.path} {ctype}\n".encode())
    h.update(body)
    return key, h.hexdigest()[:32]


def etag(version: int) -> str:
    return f'"{version}"'
