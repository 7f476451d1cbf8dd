"""The dashboard at /ui in a real browser (issue #19): Playwright drives Debian's Chromium
(`apt-get install chromium`; Playwright's own browser download is not used) against a
real uvicorn server started here, in a thread, on the embedded store.

Set OPTD_SCREENSHOTS=1 to (re)write docs/ui-sessions.png and docs/ui-session.png.
The time to first render with 1,000 sessions and a 100,000-step history is logged, not
asserted (DESIGN §7: timing never goes into an assertion).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.core.config import Settings
from app.main import create_app
from app.store import MemoryStore
from tests.fixtures_api import tensors
from tests.procs import ROOT
from tests.redisproc import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("OPTD_SCREENSHOTS") == "1"
KEY_A, KEY_B = "ui-test-key-of-tenant-a-0001", "ui-test-key-of-tenant-b-0002"
log = logging.getLogger("optd.test.ui")
P = {"layer.weight": np.zeros((4, 3), dtype=np.float32), "layer.bias": np.zeros(3, np.float32)}


class Server:
    """A real uvicorn server in a thread, on a store this test can also reach."""

    def __init__(self, **settings: Any) -> None:
        self.store = MemoryStore()
        app = create_app(Settings(redis_url=None, **settings), store=self.store)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
            time.sleep(0.05)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def create(self, key: str | None = None, **config: Any) -> str:
        r = self.http.post("/v1/sessions", json={"params": tensors(P), **config}, headers=auth(key))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def step(self, sid: str, loss: float, key: str | None = None, worker: str = "w0") -> None:
        rng = np.random.default_rng(int(loss * 1e6) % 2**32)
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in P.items()}
        body = {"grads": tensors(g), "loss": loss, "worker": worker}
        r = self.http.post(
            f"/v1/sessions/{sid}/step",
            json=body,
            headers={"Prefer": "return=minimal", **auth(key)},
        )
        assert r.status_code == 204, r.text


def auth(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser tests need Debian's Chromium "
            "(apt-get install -y chromium; .ci/run installs it)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = ctx.new_page()
    pg.on("console", lambda m: log.info("browser: %s", m.text))
    yield pg
    ctx.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def points(page: Page) -> int:
    return int(page.get_attribute("#loss-chart", "data-points") or 0)


def test_sessions_list_filter_and_a_session_growing_live(page: Page, server: Server) -> None:
    red = server.create(
        optimizer="adam",
        hyperparams={"lr": 0.01},
        labels={"team": "red"},
        schedule={"name": "cosine", "warmup_steps": 20, "total_steps": 400, "min_lr_ratio": 0.1},
    )
    blue = server.create(optimizer="sgd", labels={"team": "blue"})
    for i in range(30):
        server.step(red, 2.0 * 0.93**i + 0.05, worker=f"w{i % 3}")
    fetched: list[str] = []
    page.on("request", lambda req: fetched.append(req.url))
    page.goto(server.url + "/ui")
    expect(page.locator(f'tr[data-sid="{red}"]')).to_be_visible()
    expect(page.locator(f'tr[data-sid="{blue}"]')).to_be_visible()
    expect(page.locator(f'tr[data-sid="{red}"] td').nth(3)).to_have_text("30")
    # the list refreshes by itself
    server.step(red, 0.2)
    expect(page.locator(f'tr[data-sid="{red}"] td').nth(3)).to_have_text("31", timeout=10_000)
    # the label filter (and it is kept in the URL)
    page.fill("#label-filter", "team=red")
    page.press("#label-filter", "Enter")
    expect(page.locator(f'tr[data-sid="{blue}"]')).to_have_count(0)
    expect(page.locator(f'tr[data-sid="{red}"]')).to_be_visible()
    assert "label=team%3Dred" in page.url
    expect(page.locator("#srv-store")).to_have_text("memory ok", timeout=10_000)
    if SHOTS:
        page.fill("#label-filter", "")
        page.press("#label-filter", "Enter")
        expect(page.locator(f'tr[data-sid="{blue}"]')).to_be_visible()
        page.screenshot(path=str(ROOT / "docs" / "ui-sessions.png"))

    page.click(f'tr[data-sid="{red}"] a')
    page.wait_for_url(f"**/ui/sessions/{red}")
    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points) === 31")
    page.evaluate("window.notReloaded = true")
    for i in range(10):  # steps arrive: the chart grows without a reload (SSE)
        server.step(red, 0.1 - i * 0.005)
    page.wait_for_function(
        "Number(document.querySelector('#loss-chart').dataset.points) === 41", timeout=10_000
    )
    assert page.evaluate("window.notReloaded") is True
    assert float(page.get_attribute("#loss-chart", "data-last-loss") or "nan") == pytest.approx(
        0.055
    )
    expect(page.locator("#s-version")).to_have_text("41")
    expect(page.locator('#workers tr[data-worker="w0"]')).to_be_visible()
    expect(page.locator("#config")).to_contain_text('"optimizer": "adam"')
    expect(page.locator("#schedule-name")).to_have_text("cosine")
    expect(page.locator("#schedule-chart canvas")).to_have_count(1)
    # the checkpoint button downloads GET .../state as safetensors
    with page.expect_download() as dl:
        page.click("#download")
    path = dl.value.path()
    assert dl.value.suggested_filename.endswith(".safetensors") and path is not None
    assert Path(path).stat().st_size > 100
    # the x axis by time redraws the same points
    page.select_option("#x-axis", "time")
    assert points(page) == 41
    page.select_option("#x-axis", "version")
    # no CDN: every script, style and call went to this server
    assert fetched and all(u.startswith(server.url + "/") for u in fetched), fetched
    assert any(u.endswith("/ui/assets/vendor/uPlot.iife.min.js") for u in fetched)
    if SHOTS:
        for i in range(160):
            server.step(red, 0.05 * 0.99**i + 0.01 * abs(np.sin(i / 7)), worker=f"w{i % 3}")
        page.wait_for_function(
            "Number(document.querySelector('#loss-chart').dataset.points) === 201",
            timeout=15_000,
        )
        page.wait_for_timeout(2500)  # the workers table and steps/s refresh every 2 s
        page.screenshot(path=str(ROOT / "docs" / "ui-session.png"), full_page=True)


def test_the_event_stream_sends_new_points_and_ends() -> None:
    """GET .../events without a browser: points after `since`, `Last-Event-ID`, the end."""
    short = Server(max_wait_s=1.0)
    try:
        sid = short.create()
        for loss in (3.0, 2.0, 1.0):
            short.step(sid, loss)
        got: list[tuple[str, str, Any]] = []
        headers = {"Accept": "text/event-stream", "Last-Event-ID": "1"}
        with short.http.stream("GET", f"/v1/sessions/{sid}/events", headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            event = ident = ""
            for line in r.iter_lines():
                if not line:
                    event = ident = ""  # an event ends at a blank line
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line.startswith("data:"):
                    got.append((event, ident, orjson.loads(line[5:].strip())))
                    if len(got) == 2:
                        short.step(sid, 0.5)  # arrives while the stream is open
        kinds = [(e, i) for e, i, _ in got]
        assert kinds == [("point", "2"), ("point", "3"), ("point", "4"), ("end", "")]
        assert [d.get("loss") for _, _, d in got[:3]] == [2.0, 1.0, 0.5]
        assert got[3][2] == {"next_since": 4}
    finally:
        short.stop()


def test_with_tenants_the_page_asks_for_a_key_and_shows_only_that_tenant(page: Page) -> None:
    server = Server(api_keys=f"a:{KEY_A},b:{KEY_B}")
    try:
        mine = server.create(KEY_A, labels={"owner": "a"})
        server.step(mine, 1.5, KEY_A)
        page.goto(server.url + "/ui")
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()
        assert page.locator("tr[data-sid]").count() == 0
        # tenant B: its (empty) list, never A's session, not even by its URL
        page.fill("#login-key", KEY_B)
        page.press("#login-key", "Enter")
        expect(page.locator("#count")).to_have_text("0 sessions")
        expect(page.locator(f'tr[data-sid="{mine}"]')).to_have_count(0)
        page.goto(f"{server.url}/ui/sessions/{mine}")
        expect(page.locator("#error")).to_contain_text("does not exist")
        assert points(page) == 0
        # a wrong key is refused and the login comes back
        page.evaluate("sessionStorage.setItem('optd-api-key', 'not-a-key-at-all-000')")
        page.goto(server.url + "/ui")
        expect(page.locator("#login-error")).to_have_text("That key was refused.")
        # tenant A sees its session and its history
        page.fill("#login-key", KEY_A)
        page.press("#login-key", "Enter")
        expect(page.locator(f'tr[data-sid="{mine}"]')).to_be_visible()
        page.goto(f"{server.url}/ui/sessions/{mine}")
        page.wait_for_function("document.querySelector('#loss-chart').dataset.points === '1'")
        server.step(mine, 1.25, KEY_A)
        page.wait_for_function(
            "document.querySelector('#loss-chart').dataset.lastLoss === '1.25'", timeout=10_000
        )
    finally:
        page.context.close()
        server.stop()


def test_first_render_with_1000_sessions_and_a_100k_step_history(
    page: Page, server: Server
) -> None:
    """Logged, not asserted: how long the pages take to first render at this size."""
    for i in range(999):
        server.create(labels={"n": str(i % 10)})
    big = server.create(labels={"n": "big"})

    async def fill() -> None:  # 100,000 steps' history, as the engine would have kept it
        for v in range(1, 100_001):
            p = {"version": v, "t": 1.7e9 + v * 0.01, "loss": 3.0 / (1 + v / 1000)}
            p |= {"lr": 1e-3, "grad_norm": 1.0, "staleness": 0, "worker": f"w{v % 8}"}
            await server.store.history_append(big, v, orjson.dumps(p), 10_000, 4096)

    filler = threading.Thread(target=asyncio.run, args=(fill(),))  # Playwright owns this loop
    filler.start()
    filler.join()
    t0 = time.perf_counter()
    page.goto(server.url + "/ui")
    page.wait_for_function("window.optdFirstRenderMs !== undefined", timeout=60_000)
    wall = time.perf_counter() - t0
    rows = page.locator("tr[data-sid]").count()
    log.warning("ui: /ui first render of %d sessions: %.0f ms (goto to render)", rows, wall * 1e3)
    assert rows == 1000
    t0 = time.perf_counter()
    page.goto(f"{server.url}/ui/sessions/{big}")
    page.wait_for_function("window.optdFirstRenderMs !== undefined", timeout=60_000)
    wall = time.perf_counter() - t0
    n = points(page)
    log.warning("ui: session page first render of %d points (100k steps): %.0f ms", n, wall * 1e3)
    assert 10_000 < n <= 20_000  # the recent 10,000 and the downsampled tail
    assert page.get_attribute("#loss-chart", "data-last-version") == "100000"
