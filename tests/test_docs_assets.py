"""/docs and /redoc work without internet: every script, stylesheet and icon they load is
served by optd itself from files shipped in the package (app/api/static), not a CDN."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.procs import ROOT

# what each page must load, and what a real file of that kind looks like
ASSETS = {
    "swagger-ui/swagger-ui-bundle.js": ("javascript", 500_000, b"SwaggerUIBundle"),
    "swagger-ui/swagger-ui.css": ("text/css", 50_000, b".swagger-ui"),
    "swagger-ui/favicon-32x32.png": ("image/png", 100, b"\x89PNG"),
    "redoc/redoc.standalone.js": ("javascript", 500_000, b"Redoc"),
}
LICENCES = [
    "swagger-ui/LICENSE",
    "swagger-ui/NOTICE",
    "swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
    "redoc/LICENSE",
    "redoc/redoc.standalone.js.LICENSE.txt",
    "README.md",
]


class _Refs(HTMLParser):
    """Every URL-valued attribute (src, href, spec-url, ...) and every inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and (name in ("src", "href", "action") or name.endswith("url")):
                self.urls.append((tag, value))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def refs(html: str) -> _Refs:
    parser = _Refs()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # auth on: the documentation pages and their assets need no key, as FastAPI's own
    with TestClient(create_app(Settings(auth="on", api_keys="team:secret-key"))) as c:
        yield c


@pytest.mark.parametrize(
    ("page", "needs"),
    [
        ("/docs", {"swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css"}),
        ("/redoc", {"redoc/redoc.standalone.js"}),
    ],
)
def test_doc_pages_load_only_local_assets(client: TestClient, page: str, needs: set[str]) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"(?i)https?://", r.text), f"{page} names another host:\n{r.text}"
    page_refs = refs(r.text)
    urls = [url for _, url in page_refs.urls]
    assert urls, r.text
    loaded = set()
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page}: {url} is not local"
        if url.startswith("/docs-assets/"):
            loaded.add(url.removeprefix("/docs-assets/"))
    assert needs <= loaded, (page, urls)
    # the OpenAPI document the page shows is this server's
    assert "/openapi.json" in r.text
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200, (page, url, answer.status_code)
        if url == "/openapi.json":  # ReDoc's spec-url
            assert answer.json()["info"]["title"] == "optd"
            continue
        kind, min_size, marker = ASSETS[url.removeprefix("/docs-assets/")]
        assert kind in answer.headers["content-type"], (url, answer.headers["content-type"])
        assert len(answer.content) >= min_size and marker in answer.content, url


def test_swagger_ui_calls_no_validator_and_redirects_locally(client: TestClient) -> None:
    script = "".join(refs(client.get("/docs").text).scripts)
    # Swagger UI would otherwise fetch a badge from validator.swagger.io
    assert '"validatorUrl": null' in script, script
    assert "window.location.origin + '/docs/oauth2-redirect'" in script, script
    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "oauth2" in redirect.text
    assert not re.search(r"(?i)https?://", redirect.text)


def test_doc_pages_behind_a_path_prefix() -> None:
    """Behind a proxy that strips /optd, the pages must point at /optd/... (root_path)."""
    with TestClient(create_app(Settings(auth="off")), root_path="/optd") as c:
        for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            urls = [url for _, url in refs(c.get(page).text).urls]
            assert urls and all(u.startswith("/optd/") for u in urls), urls
            assert any(u.endswith(asset) for u in urls), urls
            assert "/optd/openapi.json" in c.get(page).text


def test_doc_pages_are_not_in_the_openapi_document() -> None:
    paths = create_app(Settings(auth="off")).openapi()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))], list(paths)


def test_assets_are_package_resources_and_match_the_readme() -> None:
    static = resources.files("app.api") / "static"
    readme = (static / "README.md").read_text()
    for name in ASSETS:
        data = (static / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() in readme, f"{name}: sha256 not in README.md"
    for name in LICENCES:
        assert (static / name).is_file(), name


def test_wheel_ships_the_assets(tmp_path: Path) -> None:
    """A non-editable install gets the files: build the wheel from a copy of the sources
    (so the checkout gets no build/ or egg-info) and look inside."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = tmp_path / "out"
    build = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    r = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = out / r.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in [*ASSETS, *LICENCES]:
        assert f"app/api/static/{name}" in names, f"{name} missing from {wheel.name}"
    assert "app/api/docs.py" in names and "app/store/lua/commit.lua" in names
