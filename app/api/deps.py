"""Annotated dependencies shared by the routes.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
pool, three thread hand-offs per request for what are attribute lookups."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.core.config import Settings
from app.engine import Engine
from app.problems import InvalidBody


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def parse_if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """`If-Match: "12"` (our ETags are versions); `*` means any version."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise InvalidBody(f'If-Match must be a version ETag like "12", got {if_match!r}')
    return int(tag)


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IfMatch = Annotated[int | None, Depends(parse_if_match)]
