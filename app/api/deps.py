"""Annotated dependencies shared by the routes.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
pool, three thread hand-offs per request for what are attribute lookups."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Header, Request

from app.core.auth import ANONYMOUS, Caller, KeyRing, current_caller
from app.core.config import Settings
from app.engine import Engine
from app.problems import InvalidBody, RateLimited


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def parse_if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    return if_match_version(if_match)


def if_match_version(if_match: str | None) -> int | None:
    """`If-Match: "12"` (our ETags are versions); `*` means any version."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise InvalidBody(f'If-Match must be a version ETag like "12", got {if_match!r}')
    return int(tag)


async def authorize(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """Who is calling (a tenant's key, an admin key, or anyone when auth is off), and the
    tenant's request rate. The caller is also put in a context variable: the engine checks
    every session it loads against it, so no route can serve another tenant's session."""
    ring: KeyRing | None = request.app.state.keyring
    caller = ANONYMOUS if ring is None else ring.authenticate(authorization)
    limits = caller.limits
    if caller.tenant is not None and limits.rate is not None:
        engine: Engine = request.app.state.engine
        burst = limits.burst or 2 * limits.rate
        wait = await engine.store.rate_take(caller.tenant, limits.rate, burst)
        if wait > 0:
            raise RateLimited(
                f"tenant {caller.tenant!r} is over its rate of {limits.rate:g} requests/s",
                retry_after=max(1, math.ceil(wait)),
            )
    current_caller.set(caller)
    return caller


CallerDep = Annotated[Caller, Depends(authorize)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IfMatch = Annotated[int | None, Depends(parse_if_match)]
