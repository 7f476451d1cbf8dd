"""What the OpenAPI document says beyond FastAPI's defaults (issue #20 item 5, #16 item 16).

The routes read their bodies themselves, so FastAPI sees untyped handlers: it would
document no request bodies, `{}` responses, and its own 422 validation shape, which
optd never sends (its request validation errors are 400 problems). The decorators take
`body(...)`, `ok(...)` and `problems(...)` from here, and `install` adds the models of
`app.api.schemas` to the components and makes every error response a `Problem` in
`application/problem+json`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import schemas

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
SAFETENSORS = "application/x-safetensors"
BINARY = {"type": "string", "format": "binary"}

# Why each status can happen, said once for every operation that can answer it.
WHY = {
    400: "invalid-body: malformed JSON or safetensors, an unknown field, a bad header or query",
    401: "unauthorized: missing or invalid API key (when auth is on)",
    404: "not-found: no such session, or one of another tenant",
    406: "not-acceptable: Accept names neither JSON nor safetensors",
    409: "conflict (a concurrent request with the same Idempotency-Key, a base_version "
    "ahead, a write that lost 50 races, a sharded session's whole asked what its shards "
    "do), stale-gradient (beyond max_staleness) or prepare-expired (a shard's commit)",
    412: "precondition-failed: If-Match names another version (current_version says which)",
    413: "too-large: the body, the JSON body, the tensor count or a safetensors header "
    "exceeds its limit",
    415: "unsupported-media-type: Content-Type is neither JSON nor safetensors",
    422: "invalid-tensor, invalid-config or idempotency-mismatch: well-formed but refused "
    "(shapes, dtypes, names, non-finite values, hyperparameters, a reused key)",
    428: "precondition-required: a shard's commit without If-Match (DESIGN §3)",
    429: "rate-limited: the tenant's rate or a quota; see Retry-After",
    503: "store-unavailable: the store cannot be reached; see Retry-After",
}
# Every /v1 operation: authorization, the tenant's rate, and a store behind it.
V1 = (401, 429, 503)


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: each status with its reason, answered as a Problem."""
    return {
        s: {"description": WHY[s], "content": {PROBLEM_JSON: {"schema": ref(schemas.Problem)}}}
        for s in sorted(set(statuses))
    }


def ok(
    status: int,
    description: str,
    model: type[BaseModel] | None = None,
    *,
    binary: bool = False,
    headers: dict[str, str] | None = None,
    links: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """A success response: JSON `model` (and safetensors when `binary`), its headers."""
    out: dict[str, Any] = {"description": description}
    content: dict[str, Any] = {}
    if model is not None:
        content[JSON] = {"schema": ref(model)}
    if binary:
        content[SAFETENSORS] = {"schema": BINARY}
    if content:
        out["content"] = content
    if headers:
        out["headers"] = {
            k: {"description": v, "schema": {"type": "string"}} for k, v in headers.items()
        }
    if links:
        out["links"] = links
    return {status: out}


def body(model: type[BaseModel] | None, description: str, *, binary: bool = True) -> dict[str, Any]:
    """`openapi_extra=` for a request body in JSON (the model, with its example) and,
    when `binary`, as a safetensors file (`application/octet-stream` is accepted too)."""
    content: dict[str, Any] = {}
    if model is not None:
        content[JSON] = {"schema": ref(model)}  # `install` adds the model's example
    if binary:
        content[SAFETENSORS] = {"schema": BINARY}
        content["application/octet-stream"] = {"schema": BINARY}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    "applied at most once: a retry with the same key and body is replayed "
    "(Idempotent-Replayed: true); another body is 422, a concurrent one 409",
    minLength=1,
    maxLength=255,
)
RESPONSE_DTYPE = header(
    "Optd-Response-Dtype",
    "`bfloat16`: the parameters in the answer rounded to bfloat16 (nearest even; BF16 in "
    'safetensors, `"dtype": "bfloat16"` in JSON), half the bytes of float32; `float32` '
    "(default): the state's values",
    enum=["float32", "bfloat16"],
)
ETAG = {"ETag": 'the new version, quoted ("12")'}


OWNER_REDIRECT: dict[str, Any] = {
    "description": (
        "Another API process owns this session (DESIGN §4 \"Session owners\"): repeat the "
        "request, body included, at `Location`, and send this session's later requests "
        "to `Optd-Owner` (the SDKs do both)"
    ),
    "headers": {
        "Location": {"description": "the owner's URL + this path and query",
                     "schema": {"type": "string"}},
        "Optd-Owner": {"description": "the owner's advertised URL", "schema": {"type": "string"}},
    },
}  # fmt: skip


def install(app: FastAPI) -> None:
    """Wrap `app.openapi`: the models as components, Problem on every error response."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        _, defs = models_json_schema(
            [(m, "validation") for m in schemas.MODELS],
            ref_template="#/components/schemas/{model}",
        )
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        components.update(defs.get("$defs", {}))
        examples = {
            ref(m)["$ref"]: extra["example"]
            for m in schemas.MODELS
            if isinstance(extra := m.model_config.get("json_schema_extra"), dict)
            and "example" in extra
        }
        for path, operations in doc["paths"].items():
            for op in operations.values():
                if path.startswith("/v1/sessions/{"):
                    op.setdefault("responses", {})["307"] = OWNER_REDIRECT
                # Added here, not through openapi_extra: FastAPI drops the nulls of
                # anything it encodes, and a checkpoint's meta needs them.
                for media in op.get("requestBody", {}).get("content", {}).values():
                    if media.get("schema", {}).get("$ref") in examples:
                        media["example"] = examples[media["schema"]["$ref"]]
                for param in op.get("parameters", []):
                    param["schema"] = _absent_not_null(param["schema"])
                responses = op.get("responses", {})
                if responses.get("422", {}).get("description") == "Validation Error":
                    del responses["422"]  # FastAPI's own: optd answers 400 invalid-body
                for status, response in responses.items():
                    if int(status) >= 400:
                        response["content"] = {PROBLEM_JSON: {"schema": ref(schemas.Problem)}}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`x: str | None = None` is documented by FastAPI as `anyOf: [string, null]`, but a
    header or query parameter cannot be null: it is absent (clients sent `If-Match: null`)."""
    options = schema.get("anyOf")
    if not options or {"type": "null"} not in options or len(options) != 2:
        return schema
    kept = dict(next(o for o in options if o != {"type": "null"}))
    return kept | {k: v for k, v in schema.items() if k != "anyOf"}
