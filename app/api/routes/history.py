"""A session's history (issue #19): a page of points, and a live stream of new ones.

The stream is Server-Sent Events (sse-starlette) fed by polling the store's history
every `OPTD_EVENTS_POLL_S` (0.25 s): any API process can serve any viewer, with nothing
to fan out between processes. It ends after `OPTD_MAX_WAIT_S` (like a long poll) with an
`end` event; clients reconnect with `Last-Event-ID` (EventSource does) or `?since=`. It
takes the API key in `Authorization` like every /v1 call: the dashboard reads it with
fetch() instead of EventSource (which cannot send headers), so keys never go in URLs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from app.api import openapi as doc
from app.api.deps import CallerDep, EngineDep, SettingsDep
from app.api.schemas import HistoryPage
from app.api.transport import json_response
from app.problems import NotFound

router = APIRouter(prefix="/v1/sessions", tags=["history"])
PAGE = 1000  # points per store read while streaming

EVENT = {  # one event of the stream (schemathesis checks each against it)
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["point", "end"]},
        "id": {"type": "string", "description": "the point's version"},
        "data": {"type": "string", "description": "a HistoryPoint, or {next_since}, as JSON"},
    },
}
STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the event stream",
        "content": {"text/event-stream": {"schema": EVENT}},
    }
}
Since = Annotated[
    int | None,
    Query(ge=-1, le=10**18 - 1, description="only points with a larger version"),
]


@router.get(
    "/{sid}/history",
    operation_id="getHistory",
    summary="A session's history",
    description="A point per committed step or round (version, time, loss, lr, grad_norm, "
    "staleness, worker, contributors), oldest first, after `?since=` (default: from the "
    "start). The last `OPTD_HISTORY_POINTS` (10,000) are kept at full resolution, and a tail "
    "downsampled to as many covers the whole run; page with `next_since` while `more`.",
    responses=doc.ok(200, "a page of points", HistoryPage) | doc.problems(*doc.V1, 400, 404),
)
async def get_history(
    sid: str,
    engine: EngineDep,
    caller: CallerDep,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 10_000,
) -> Response:
    return json_response(await engine.history(sid, caller, -1 if since is None else since, limit))


@router.get(
    "/{sid}/events",
    operation_id="streamHistory",
    summary="New history points, live (Server-Sent Events)",
    description="`text/event-stream`: an `event: point` (`id` = its version, `data` = the "
    "point as JSON) for every step committed after `?since=` (default: now), then, after "
    "OPTD_MAX_WAIT_S, an `event: end` whose data names `next_since`; reconnect to go on "
    "(`Last-Event-ID` is honoured). Comment lines keep the connection alive.",
    responses=STREAM | doc.problems(*doc.V1, 400, 404),
)
async def stream_history(
    sid: str,
    request: Request,
    engine: EngineDep,
    caller: CallerDep,
    settings: SettingsDep,
    since: Since = None,
    last_event_id: Annotated[
        str | None, Header(pattern="^[0-9]{1,18}$", description="resume after this version")
    ] = None,
) -> Response:
    version, _ = await engine.describe_session(sid, caller)  # 404 before the stream starts
    start = version if since is None else since
    if last_event_id is not None and last_event_id.isdigit():
        start = int(last_event_id)

    async def events() -> AsyncIterator[dict[str, str]]:
        after = start
        deadline = time.monotonic() + settings.max_wait_s
        while True:
            try:
                page = await engine.history(sid, caller, after, PAGE)
            except NotFound:
                yield {"event": "end", "data": orjson.dumps({"deleted": True}).decode()}
                return
            for p in page["points"]:
                yield {"event": "point", "id": str(p["version"]), "data": orjson.dumps(p).decode()}
            after = page["next_since"]
            if page["more"]:
                continue
            if time.monotonic() >= deadline:
                yield {"event": "end", "data": orjson.dumps({"next_since": after}).decode()}
                return
            await asyncio.sleep(settings.events_poll_s)

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store"})
