"""The OpenAPI document says what the API does (issue #20 item 5, issue #16 item 16).

Every operation has a summary, a description and its error responses as problem+json;
every request body an example (which the server accepts, in order: create, step, put
params, patch), both media types where tensors travel, and the step its headers and
query parameters. What the server refuses, the schema refuses too (If-Match, ?label=,
empty tensor maps), and a 405 lists every method of the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
JSON, ST = "application/json", "application/x-safetensors"
V1_ERRORS = {"401", "429", "503"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(redis_url=None))) as c:
        yield c


@pytest.fixture(scope="module")
def doc(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in doc["paths"].items() for m, op in ops.items()]


def test_every_operation_is_summarised_described_and_named(doc: dict[str, Any]) -> None:
    ops = operations(doc)
    assert (
        len(ops) == 20
    )  # 14 + the three workers operations (elastic rounds) + history, events + prepare
    for method, path, op in ops:
        assert op.get("summary"), (method, path)
        assert len(op.get("description", "")) > 40, (method, path)
        assert re.fullmatch(r"[a-z][A-Za-z]+", op["operationId"]), (method, path)


def test_every_error_response_is_a_problem_and_listed(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for method, path, op in operations(doc):
        responses = op["responses"]
        errors = {s for s in responses if int(s) >= 400}
        for status in errors:
            assert responses[status]["content"] == PROBLEM, (method, path, status)
            assert responses[status]["description"], (method, path, status)
        if path.startswith("/v1/"):
            assert errors >= V1_ERRORS, (method, path)
        if "{sid}" in path:
            assert "404" in errors, (method, path)
        if "requestBody" in op:
            assert errors >= {"400", "413", "415"}, (method, path)
        if any(p["name"] == "if-match" for p in op.get("parameters", [])):
            assert errors >= {"400", "412"}, (method, path)
        assert any(200 <= int(s) < 300 for s in responses), (method, path)


def test_request_bodies_have_examples_and_media_types(doc: dict[str, Any]) -> None:
    bodies = [(m, p, op["requestBody"]) for m, p, op in operations(doc) if "requestBody" in op]
    assert len(bodies) == 6  # + prepare (the step's body)
    for method, path, body in bodies:
        assert body["description"], (method, path)
        json_body = body["content"][JSON]
        assert json_body["schema"]["$ref"].startswith("#/components/schemas/"), (method, path)
        assert isinstance(json_body["example"], dict), (method, path)
        if method != "PATCH":  # everything that carries tensors also takes safetensors
            assert body["content"][ST]["schema"]["format"] == "binary", (method, path)


def test_tensor_responses_in_both_media_types(doc: dict[str, Any]) -> None:
    for path in ("/v1/sessions/{sid}/step", "/v1/sessions/{sid}/params"):
        method = "post" if path.endswith("step") else "get"
        ok = doc["paths"][path][method]["responses"]["200"]
        assert set(ok["content"]) == {JSON, ST}, path
        assert "ETag" in ok["headers"] and "Vary" in ok["headers"], path
    state = doc["paths"]["/v1/sessions/{sid}/state"]["get"]["responses"]["200"]
    assert set(state["content"]) == {JSON, ST}
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


def test_step_documents_headers_queries_and_outcomes(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/v1/sessions/{sid}/step"]["post"]
    params = {(p["in"], p["name"].lower()) for p in op["parameters"]}
    for where, name in [
        ("query", "wait"),
        ("query", "return"),
        ("header", "prefer"),
        ("header", "idempotency-key"),
        ("header", "if-match"),
        ("header", "optd-base-version"),
        ("header", "optd-worker"),
        ("header", "optd-loss"),
    ]:
        assert (where, name) in params, name
    assert {"200", "202", "204"} <= set(op["responses"])
    assert "Optd-Version" in op["responses"]["204"]["headers"]
    barrier = op["responses"]["202"]["content"][JSON]["schema"]
    assert barrier == {"$ref": "#/components/schemas/BarrierPending"}


def test_create_links_the_session_to_its_operations(doc: dict[str, Any]) -> None:
    links = doc["paths"]["/v1/sessions"]["post"]["responses"]["201"]["links"]
    ids = {op["operationId"]: (m, p) for m, p, op in operations(doc)}
    linked = {link["operationId"] for link in links.values()}
    # (join/leave also need a worker id the created session cannot supply)
    assert linked == {i for i, (_, p) in ids.items() if "{sid}" in p and "{worker}" not in p}
    for link in links.values():
        assert link["parameters"] == {"sid": "$response.body#/id"}


def test_examples_are_accepted_in_order(doc: dict[str, Any], client: TestClient) -> None:
    def example(path: str, method: str) -> Any:
        return doc["paths"][path][method]["requestBody"]["content"][JSON]["example"]

    r = client.post("/v1/sessions", json=example("/v1/sessions", "post"))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = client.post(f"/v1/sessions/{sid}/step", json=example("/v1/sessions/{sid}/step", "post"))
    assert r.status_code == 200, r.text
    r = client.put(f"/v1/sessions/{sid}/params", json=example("/v1/sessions/{sid}/params", "put"))
    assert r.status_code == 200, r.text
    r = client.patch(f"/v1/sessions/{sid}", json=example("/v1/sessions/{sid}", "patch"))
    assert r.status_code == 200, r.text
    assert r.json()["hyperparams"]["lr"] == 0.0003
    checkpoint = client.get(f"/v1/sessions/{sid}/state").json()
    assert set(checkpoint) == {"version", "meta", "tensors"}  # the Checkpoint schema's fields
    r = client.put("/v1/sessions/restored/state", json=example("/v1/sessions/{sid}/state", "put"))
    assert r.status_code == 201, r.text


def _param(doc: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    found = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == name]
    assert len(found) == 1, name
    return dict(found[0]["schema"])


def test_empty_if_match_is_refused_by_schema_and_server(
    doc: dict[str, Any], client: TestClient
) -> None:
    schema = _param(doc, "/v1/sessions/{sid}", "patch", "if-match")
    assert schema["type"] == "string"  # absent or a string, never null
    pattern = schema["pattern"]
    for accepted in ('"12"', 'W/"3"', "*", " 7 "):
        assert re.search(pattern, accepted), accepted
    for refused in ("", '"x"', "12a"):
        assert not re.search(pattern, refused), refused
        sid = client.post("/v1/sessions", json={"params": {"w": [1.0]}}).json()["id"]
        r = client.patch(f"/v1/sessions/{sid}", json={}, headers={"if-match": refused})
        assert r.status_code == 400, (refused, r.text)


def test_empty_label_is_refused_by_schema_and_server(
    doc: dict[str, Any], client: TestClient
) -> None:
    schema = _param(doc, "/v1/sessions", "get", "label")
    assert schema["type"] == "array"
    pattern = schema["items"]["pattern"]
    assert re.search(pattern, "project=demo") and re.search(pattern, "k=")
    for refused in ("", "project", "=demo"):
        assert not re.search(pattern, refused), refused
        r = client.get("/v1/sessions", params={"label": refused})
        assert r.status_code == 400, (refused, r.text)


def test_empty_tensor_maps_are_refused_by_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for model, field in [
        ("ParamsPut", "params"),
        ("StepRequest", "grads"),
        ("SessionCreate", "params"),
    ]:
        assert field in schemas[model]["required"], model
        assert schemas[model]["properties"][field]["minProperties"] == 1, model
        assert schemas[model]["additionalProperties"] is False, model


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/sessions", "GET, POST"),
        ("PUT", "/v1/sessions/abc", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/sessions/abc/params", "GET, PUT"),
        ("GET", "/v1/sessions/abc/step", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.headers["content-type"] == "application/problem+json"
