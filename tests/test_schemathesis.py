"""The app against its own OpenAPI document, driven by schemathesis (DESIGN §3, §7).

Every documented operation gets schema-conforming (positive) and schema-violating
(negative) requests, judged by all of schemathesis's checks (`--checks all`: no 5xx,
statuses, headers, content types and bodies as documented, schema-valid requests
accepted, schema-violating ones refused, 405 with a true Allow) plus optd's own: every
error is an RFC 9457 problem (`application/problem+json`, `type` under
`urn:optd:problem:`, `status` equal to the HTTP status). Path parameters hit both
generated ids and sessions seeded under fixed ids, and some positive requests carry a
valid body for those sessions so the success paths (and the 409/412 ones behind them)
are reached too. A stateful run follows the document's links from a created session
to its operations (and checks that a deleted session is gone).

Runs on the memory and redis stores; the `cluster` store kind is left out to keep the
file near a minute: this test is about the HTTP contract, which does not depend on
the store, and the cluster store runs the rest of the API suite. Generation is
derandomized and bounded, requests go in-process through a TestClient (no network).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from safetensors.numpy import save as st_save
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response

from app.core.config import Settings
from app.main import create_app

EXAMPLES = 80  # per operation and generation mode
SEEDED = ("seed-adam", "seed-f64", "seed-sync")
P = {"w": np.arange(4, dtype=np.float32).reshape(2, 2), "b": np.zeros(2, dtype=np.float32)}
SEED_CONFIGS: dict[str, dict[str, Any]] = {
    "seed-adam": {"optimizer": "adam", "groups": [{"match": ["b"], "weight_decay": 0.0}]},
    "seed-f64": {"optimizer": "sgd", "dtype": "float64", "hyperparams": {"momentum": 0.9}},
    "seed-sync": {"optimizer": "adamw", "mode": "sync", "workers": 2},
}
PROBLEM_MEMBERS = ("type", "title", "status", "detail")
ST = "application/x-safetensors"

DOC = create_app(Settings(redis_url=None)).openapi()
# Schema-valid requests must succeed, or fail for reasons a schema cannot say: an unknown
# session (404), a version or key conflict (409, 412), tensors that do not fit the
# session or a config the optimizer refuses (422 invalid-tensor, invalid-config), a size
# limit no schema can state (413: a shape whose product of dimensions passes 2^31). A 400
# for a schema-valid request is a failure: the document would be lying about syntax.
ACCEPTED = ["2xx", "401", "404", "409", "412", "413", "422", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"seed": 0, "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
)
SCHEMA = schemathesis.openapi.from_dict(DOC, config=CONFIG)

# Checks that send requests of their own (other methods for `unsupported_method`) send
# them in-process to this app: an app of its own, since schemathesis runs the lifespan
# of the apps it is given in its own event loop (the test's client has another).
RESENDS = create_app(Settings(redis_url=None))


@SCHEMA.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Half the time, aim `{sid}` at a seeded session instead of a generated id."""
    if not path_parameters or "sid" not in path_parameters:
        return st.just(path_parameters)
    seeded = st.sampled_from(SEEDED).map(lambda sid: {**path_parameters, "sid": sid})
    return st.one_of(st.just(path_parameters), seeded)


def _tensor(a: np.ndarray) -> dict[str, Any]:
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.ravel().tolist()}


GRADS = {"w": np.full((2, 2), 0.5, dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
# Valid bodies for the seeded sessions, per operation and request media type.
VALID_BODIES: dict[tuple[str, str], list[Any]] = {
    ("POST /v1/sessions/{sid}/step", "application/json"): [
        {"grads": {k: _tensor(v) for k, v in GRADS.items()}},
        {"grads": {"b": [0.25, -0.25]}, "worker": "w1", "base_version": 0, "loss": 1.5},
    ],
    ("POST /v1/sessions/{sid}/step", ST): [
        st_save(GRADS),
        st_save({"b": GRADS["b"]}, metadata={"worker": "w2", "loss": "0.5"}),
    ],
    ("PUT /v1/sessions/{sid}/params", "application/json"): [
        {"params": {k: _tensor(v) for k, v in P.items()}}
    ],
    ("PUT /v1/sessions/{sid}/params", ST): [st_save(P)],
    ("POST /v1/sessions", "application/json"): [
        {"params": {k: _tensor(v) for k, v in P.items()}, "optimizer": "nadam"},
    ],
    ("POST /v1/sessions", ST): [
        st_save(P, metadata={"config": orjson.dumps({"optimizer": "lion"}).decode()})
    ],
    ("PATCH /v1/sessions/{sid}", "application/json"): [
        {"hyperparams": {"lr": 0.01}, "labels": {"team": "a"}},
        {"optimizer": "sgd"},
    ],
}


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's: memory and redis only (see the module docstring)."""
    return str(request.param)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """An app whose unexpected errors come back as 500 responses (checked) instead of
    being raised into the test, with long polls and sync rounds cut short."""
    app = create_app(settings.model_copy(update={"max_wait_s": 0.05}))
    with TestClient(app, raise_server_exceptions=False) as client:
        seed_sessions(client)
        yield client


def seed_sessions(client: TestClient, only: str | None = None) -> None:
    """Sessions under fixed ids: created, exported, and restored with PUT .../state."""
    for sid, config in SEED_CONFIGS.items():
        if only is not None and sid != only:
            continue
        body = {"params": {k: _tensor(v) for k, v in P.items()}, **config}
        r = client.post("/v1/sessions", json=body)
        assert r.status_code == 201, r.text
        tmp = r.json()["id"]
        checkpoint = client.get(f"/v1/sessions/{tmp}/state").json()
        client.delete(f"/v1/sessions/{sid}")
        r = client.put(f"/v1/sessions/{sid}/state", json=checkpoint)
        assert r.status_code == 201, r.text
        assert client.delete(f"/v1/sessions/{tmp}").status_code == 204


def problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is an RFC 9457 problem with optd's members (DESIGN §3)."""
    if response.status_code < 400:
        return None
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype.split(";")[0].strip() == "application/problem+json", (
        f"error {response.status_code} with Content-Type {ctype!r}, not application/problem+json"
    )
    body = orjson.loads(response.content)
    assert isinstance(body, dict), f"problem body is not an object: {body!r}"
    missing = [m for m in PROBLEM_MEMBERS if m not in body]
    assert not missing, f"problem lacks member(s) {missing}: {body!r}"
    assert isinstance(body["type"], str) and body["type"].startswith("urn:optd:problem:"), body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["status"] == response.status_code, (
        f"problem status {body['status']!r} but HTTP status {response.status_code}"
    )
    if response.status_code in (429, 503):
        assert response.headers.get("retry-after"), f"{response.status_code} without Retry-After"
    return True


def validate(
    case: Any, response: Any, binary_generated: bool = False, recorder: Any = None
) -> None:
    """All built-in checks and `problem_json`. A generated safetensors body is a random
    byte string: the schema cannot describe a file's inside, so schemathesis's claim that
    it is valid is not checked (its answer is checked like every other)."""
    excluded = [positive_data_acceptance] if binary_generated else []
    case.validate_response(
        response,
        additional_checks=[problem_json],
        excluded_checks=excluded,
        transport_kwargs={"app": RESENDS},
        recorder=recorder,
    )


def send(client: TestClient, case: Any) -> Any:
    kw = case.as_transport_kwargs(base_url=str(client.base_url))
    extra = set(kw) - {"method", "url", "headers", "params", "cookies", "json", "data"}
    assert not extra, f"unexpected transport arguments {extra}"
    if kw.get("cookies"):
        kw["headers"]["cookie"] = "; ".join(f"{k}={v}" for k, v in kw["cookies"].items())
    request: dict[str, Any] = {"headers": kw["headers"], "params": kw.get("params") or None}
    if "json" in kw:
        # As `requests` would send it: stdlib json (big integers included), UTF-8.
        request["content"] = json.dumps(kw["json"], allow_nan=False).encode()
    elif "data" in kw:
        data = kw["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    return client.request(kw["method"], kw["url"], **request)


def negatable(op: Any) -> bool:
    """Operations with something schemathesis can violate: a body or a query parameter (a
    bare string path parameter or an optional string header cannot be made invalid)."""
    return len(op.body) > 0 or any(p.location == "query" for p in op.iter_parameters())


OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS]
CASES += [(op, GenerationMode.NEGATIVE) for op in OPERATIONS if negatable(op)]


# Headers beside the generated ones: Accept (which OpenAPI leaves to the response media
# types), a reused Idempotency-Key and Prefer. Positive cases get valid values only.
VALID_ACCEPT = ["application/json", ST, "application/octet-stream", "*/*"]


def extra_headers(mode: GenerationMode) -> st.SearchStrategy[dict[str, str]]:
    positive = mode is GenerationMode.POSITIVE
    accept = VALID_ACCEPT + ([] if positive else ["image/png", "*/*;q=0"])
    keys = ["k1", "k2"] + ([] if positive else ["x" * 300])
    return st.fixed_dictionaries(
        {},
        optional={
            "accept": st.sampled_from(accept),
            "idempotency-key": st.sampled_from(keys),
            "prefer": st.just("return=minimal"),
        },
    )


@pytest.mark.parametrize(
    ("operation", "mode"), CASES, ids=[f"{op.label}-{m.value}" for op, m in CASES]
)
def test_contract(api: TestClient, operation: Any, mode: GenerationMode) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    known = {mt: VALID_BODIES.get((operation.label, mt), []) for mt in ("application/json", ST)}
    if operation.label == "PUT /v1/sessions/{sid}/state":  # a real checkpoint, both formats
        known["application/json"] = [api.get("/v1/sessions/seed-adam/state").json()]
        known[ST] = [api.get("/v1/sessions/seed-f64/state", headers={"accept": ST}).content]

    @hsettings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(case=strategy, pick=st.integers(0, 3), extra=extra_headers(mode))
    def run(case: Any, pick: int, extra: dict[str, str]) -> None:
        bodies = known.get(case.media_type or "", [])
        seeded = case.path_parameters.get("sid", SEEDED[0]) in SEEDED
        substituted = mode is GenerationMode.POSITIVE and pick < len(bodies) and seeded
        if substituted:  # negative cases keep their violation
            case.body = bodies[pick]
            if case.path_parameters.get("sid") == "seed-sync" and "step" in operation.path:
                # a sync round needs worker ids, a rule of the session, not of the schema
                if isinstance(case.body, dict):
                    case.body = {"worker": "w9", **case.body}
                else:
                    case.headers["Optd-Worker"] = "w9"
        if mode is GenerationMode.POSITIVE and case.query and case.query.get("cursor"):
            case.query["cursor"] = api.get("/v1/sessions?limit=1").json()["next_cursor"]
        for name, value in extra.items():
            case.headers[name] = value
        response = send(api, case)
        binary = case.media_type in (ST, "application/octet-stream") and not substituted
        validate(case, response, binary_generated=binary)
        if (
            operation.method.upper() == "DELETE"
            and response.status_code == 204
            and case.path_parameters["sid"] in SEEDED
        ):
            seed_sessions(api, only=case.path_parameters["sid"])

    run()


STATEFUL_SCENARIOS = 25  # scenarios of at most STATEFUL_STEPS linked calls each
STATEFUL_STEPS = 6


def test_stateful(api: TestClient) -> None:
    """Sequences that follow the document's links: create a session, then use its `id`
    to describe, step, read and write params and state, patch and delete it. Every other
    request gets a valid body (sessions created through the links have the seeded shapes,
    so their steps and writes succeed), the rest generated ones; all checks apply,
    including the stateful ones (a created session exists, a deleted one is gone)."""
    base = SCHEMA.as_state_machine()
    sent = [0]

    class Machine(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            # Which calls get a valid body depends only on the call's place in its own
            # scenario: hypothesis replays a scenario and needs the same responses (so the
            # same links) every time, or it reports FlakyStrategyDefinition.
            self.calls = 0

        def call(self, case: Any, **kwargs: Any) -> Any:
            sent[0] += 1
            self.calls += 1
            bodies = VALID_BODIES.get((case.operation.label, case.media_type or ""), [])
            self.substituted = bool(bodies) and self.calls % 2 == 0
            if self.substituted:
                case.body = bodies[(self.calls // 2) % len(bodies)]
            return Response.from_any(send(api, case))  # the recorder reads its request

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            binary = case.media_type in (ST, "application/octet-stream") and not self.substituted
            validate(case, response, binary_generated=binary, recorder=self.recorder)

    Machine.run(
        settings=hsettings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert sent[0] > STATEFUL_SCENARIOS  # scenarios went past their first call
