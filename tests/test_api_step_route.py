"""POST /step is served by a plain Starlette route ahead of the documented FastAPI one
(app.api.routes.step.fast_route, for speed): both must answer alike, and the OpenAPI
document must still describe the operation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save

from app.api.routes import step
from app.core.config import Settings
from app.main import create_app

ST = "application/x-safetensors"
KEY_A = "optd_0123456789abcdef_secretsecretsecret1234"
KEY_B = "optd_fedcba9876543210_secretsecretsecret5678"


def _exchange(client: TestClient, auth: dict[str, str]) -> list[tuple[int, Any, bytes]]:
    """Status, headers (less Date) and body of a run of edge cases on a fresh session."""
    r = client.post(
        "/v1/sessions",
        json={"optimizer": "adam", "params": {"w": {"shape": [3], "dtype": "float32",
                                                    "data": [0, 0, 0]}}},
        headers=auth,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    path = f"/v1/sessions/{r.json()['id']}/step"
    g = st_save({"w": np.ones(3, np.float32)})
    cases: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("POST", path, {"content-type": ST, "accept": ST}, g),
        ("POST", path, {"content-type": ST, "if-match": '"1"'}, g),
        ("POST", path, {"content-type": ST, "if-match": '"9"'}, g),
        ("POST", path, {"content-type": ST, "if-match": "bogus"}, g),
        ("POST", path, {"content-type": ST, "accept": "text/html"}, g),
        ("POST", path, {"content-type": ST, "prefer": "return=minimal"}, g),
        ("POST", path + "?return=updated&wait=1", {"content-type": ST}, g),
        ("POST", path + "?return=nope", {"content-type": ST}, g),
        ("POST", path, {"content-type": ST, "idempotency-key": "k"}, g),
        ("POST", path, {"content-type": ST, "idempotency-key": "k"}, g),
        ("POST", path, {"content-type": "application/json"}, b'{"grads": {"w": [1, 2, 3]}}'),
        ("POST", path, {"content-type": ST, "content-length": "99999999999"}, g),
        ("POST", "/v1/sessions/missing/step", {"content-type": ST}, g),
        ("GET", path, {}, None),
    ]
    if auth:
        cases += [
            ("POST", path, {"content-type": ST, "authorization": "Bearer nope"}, g),
            ("POST", path, {"content-type": ST, "authorization": f"Bearer {KEY_B}"}, g),
            ("POST", path, {"content-type": ST, "authorization": "x", "if-match": "bad"}, g),
        ]
    out = []
    for method, url, headers, body in cases:
        r = client.request(method, url, headers={**auth, **headers}, content=body)
        hs = [(k, v) for k, v in r.headers.multi_items() if k != "date"]
        out.append((r.status_code, hs, r.content.replace(path.encode(), b"PATH")))
    return out


@pytest.mark.parametrize("auth", ["off", "on"])
def test_fast_route_answers_like_the_documented_one(auth: str) -> None:
    settings = Settings(auth="off")
    headers: dict[str, str] = {}
    if auth == "on":
        settings = Settings(auth="on", api_keys=f"acme:{KEY_A},beta:{KEY_B}")
        headers = {"authorization": f"Bearer {KEY_A}"}
    fast = create_app(settings)
    assert fast.router.routes[0] is step.fast_route
    documented = create_app(settings)
    documented.router.routes.remove(step.fast_route)  # the FastAPI route answers
    with TestClient(fast) as a, TestClient(documented) as b:
        got, want = _exchange(a, headers), _exchange(b, headers)
    for g, w in zip(got, want, strict=True):
        # session ids differ between the two apps; they appear only in 404 details
        assert g[:2] == w[:2] and (g[2] == w[2] or g[0] == 404)


def test_step_stays_in_the_openapi_document() -> None:
    doc = create_app(Settings(auth="off")).openapi()
    op = doc["paths"]["/v1/sessions/{sid}/step"]["post"]
    assert op["operationId"] == "step"
    assert {p["name"] for p in op["parameters"]} >= {"sid", "authorization", "if-match"}
    assert set(op["requestBody"]["content"]) >= {"application/json", ST}
