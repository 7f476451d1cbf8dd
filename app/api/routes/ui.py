"""The dashboard (issue #19): /ui, the sessions, and /ui/sessions/{id}, one session live.

The pages are static files shipped in the package (`app/api/ui/`, uPlot vendored under
`vendor/`, no CDN) and need no key: they hold no data. Everything they show comes from
the documented /v1 API, called by the page's script with the key the user typed (kept
in the browser's sessionStorage) when auth is on.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

router = APIRouter(include_in_schema=False)
ASSETS = "/ui/assets"
_UI = resources.files("app.api") / "ui"


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((_UI / name).read_text(), headers={"Cache-Control": "no-cache"})


@router.get("/ui")
async def sessions_page() -> Response:
    return _page("sessions.html")


@router.get("/ui/sessions/{sid}")
async def session_page(sid: str) -> Response:
    return _page("session.html")


def mount(app: FastAPI) -> None:
    """The pages, and their scripts, styles and uPlot under /ui/assets."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(packages=[("app.api", "ui")]), name="ui-assets")
