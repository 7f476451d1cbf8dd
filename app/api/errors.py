"""Every error leaves as RFC 9457 application/problem+json, from this one place."""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route, compile_path

from app.problems import Problem

log = logging.getLogger("optd")

PROBLEM_JSON = "application/problem+json"

_HTTP_SLUGS = {
    400: ("invalid-body", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "No acceptable representation"),
    413: ("too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-body", "Invalid request"),
}


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    if body["status"] == 401:  # RFC 9110 §11.6.1: a 401 names the scheme it wants
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="optd"'}
    return Response(
        orjson.dumps(body), status_code=body["status"], media_type=PROBLEM_JSON, headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc.to_dict(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()
        ]
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return problem_response(
            {
                "type": "urn:optd:problem:invalid-body",
                "title": "Invalid request",
                "status": 400,
                "detail": detail,
                "errors": errors,
            }
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("error", "Error"))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem_response(
            {
                "type": f"urn:optd:problem:{slug}",
                "title": title,
                "status": exc.status_code,
                "detail": str(exc.detail),
            },
            headers,
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # A client that hangs up mid-body is routine (a killed worker, a timeout on its
        # side): nothing was read, nothing changed, and nobody is left to answer. One line,
        # not an "unhandled error" with tracebacks.
        log.info(
            "client disconnected before sending the whole body: %s %s",
            request.method,
            request.url.path,
        )
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            {
                "type": "urn:optd:problem:internal",
                "title": "Internal error",
                "status": 500,
                "detail": "an unexpected error occurred; the session state was not changed. "
                "Please report it with the server log.",
            }
        )


def allowed_methods(request: Request) -> str:
    """Every method of every route on this path (RFC 9110 §15.5.6). Starlette's 405 names
    only the methods of the first route whose path matched, but GET and POST /v1/sessions
    (and POST /step's fast route and its documented twin) are separate routes."""
    app: FastAPI = request.app
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "allow", None)
    if table is None:
        # Plain routes (docs, the fast step route) and every documented operation: routers
        # included into the app are not a flat list of routes to walk in FastAPI 0.165.
        table = [
            (r.path_regex, set(r.methods)) for r in app.routes if isinstance(r, Route) and r.methods
        ]
        for path, operations in app.openapi()["paths"].items():
            table.append((compile_path(path)[0], {m.upper() for m in operations}))
        app.state.allow = table
    path = request.url.path
    return ", ".join(sorted(set().union(*(m for regex, m in table if regex.match(path)))))
