"""Annotated dependencies shared by the routes.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
pool, three thread hand-offs per request for what are attribute lookups."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.api.parse import parse_uint
from app.core.auth import ANONYMOUS, Caller
from app.core.config import Settings
from app.core.keyfile import KeySource
from app.engine import Engine


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# What `if_match_version` accepts, so the document says that anything else is 400.
IF_MATCH = r'^\s*(\*|(W/)?"*[0-9]+"*)\s*$'


async def parse_if_match(
    if_match: Annotated[
        str | None,
        Header(
            # documented, not enforced here: `if_match_version` refuses the rest, so this
            # route and the fast step route answer alike
            json_schema_extra={"pattern": IF_MATCH},
            description='a version ETag like "12" (412 if the session is at another), or *',
        ),
    ] = None,
) -> int | None:
    return if_match_version(if_match)


def if_match_version(if_match: str | None) -> int | None:
    """`If-Match: "12"` (our ETags are versions); `*` means any version."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    return parse_uint(tag, 'If-Match (a version ETag like "12")')


async def authorize(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """Who is calling (a tenant's key, an admin key, or anyone when auth is off), after
    taking one request from the tenant's rate. Routes pass the caller to every engine
    call: the engine checks each session it loads against it."""
    ring: KeySource | None = request.app.state.keyring
    caller = ANONYMOUS if ring is None else ring.authenticate(authorization)
    engine: Engine = request.app.state.engine
    await engine.admit(caller)
    return caller


CallerDep = Annotated[Caller, Depends(authorize)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IfMatch = Annotated[int | None, Depends(parse_if_match)]
