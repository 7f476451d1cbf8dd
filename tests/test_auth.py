"""Tenants and keys (DESIGN §6): every other tenant gets 404, quotas answer 429."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.auth import KeyRing, auth_enabled, entry_for, new_key
from app.problems import Unauthorized
from tests.fixtures_api import assert_problem, tensors

A, B, ADMIN = (new_key()[1] for _ in range(3))
P = {"w": np.zeros(3, dtype=np.float32)}


def keys_file(tmp_path: Path, tenants: dict[str, dict[str, float]] | None = None) -> str:
    path = tmp_path / "keys.json"
    doc = {
        "tenants": tenants or {},
        "keys": [entry_for("a", A), entry_for("b", B), entry_for("ops", ADMIN, admin=True)],
    }
    path.write_text(json.dumps(doc))
    return str(path)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keyring_hashes_and_checks(tmp_path: Path) -> None:
    text = Path(keys_file(tmp_path)).read_text()
    assert A not in text and B not in text  # only salted hashes are stored
    ring = KeyRing.load(keys_file(tmp_path), "c:plain-dev-key-123456")
    assert ring.authenticate(f"Bearer {A}").tenant == "a"
    assert ring.authenticate(f"Bearer {ADMIN}").admin
    assert ring.authenticate("Bearer plain-dev-key-123456").tenant == "c"
    for bad in (
        None,
        "",
        "Bearer",
        f"Basic {A}",
        f"Bearer {A}x",
        "Bearer optd_0000000000000000_x" * 2,
    ):
        with pytest.raises(Unauthorized):
            ring.authenticate(bad)
    empty = KeyRing.load(None, None)
    assert not auth_enabled("auto", "127.0.0.1", empty)
    assert auth_enabled("auto", "0.0.0.0", empty) and auth_enabled("auto", "::", empty)
    assert auth_enabled("auto", "127.0.0.1", ring) and not auth_enabled("off", "0.0.0.0", ring)


def test_tenants_see_only_their_sessions(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys_file=keys_file(tmp_path))
    assert_problem(client.get("/v1/sessions"), 401, "unauthorized")
    assert_problem(client.get("/v1/sessions", headers=bearer("nope")), 401, "unauthorized")
    assert client.get("/healthz").status_code == 200  # probes need no key
    r = client.post("/v1/sessions", json={"params": tensors(P)}, headers=bearer(A))
    assert r.status_code == 201 and r.json()["tenant"] == "a"
    sid = r.json()["id"]
    base = f"/v1/sessions/{sid}"
    step = {"grads": {"w": [1.0, 1.0, 1.0]}}
    state = client.get(base + "/state", headers=bearer(A)).json()
    for method, path, body in [
        ("GET", base, None),
        ("PATCH", base, {"labels": {"x": "y"}}),
        ("POST", base + "/step", step),
        ("GET", base + "/params", None),
        ("GET", base + "/params?min_version=5&wait=10", None),
        ("PUT", base + "/params", {"params": {"w": [1.0, 2.0, 3.0]}}),
        ("GET", base + "/state", None),
        ("PUT", base + "/state", state),
        ("DELETE", base, None),
    ]:
        t0 = time.monotonic()
        r = client.request(method, path, json=body, headers=bearer(B))
        assert_problem(r, 404, "not-found")
        assert time.monotonic() - t0 < 5  # no long-poll on another tenant's session
    assert client.get("/v1/sessions", headers=bearer(B)).json()["sessions"] == []
    mine = client.get("/v1/sessions", headers=bearer(A)).json()["sessions"]
    assert [s["id"] for s in mine] == [sid]
    client.post("/v1/sessions", json={"params": tensors(P)}, headers=bearer(B))
    every = client.get("/v1/sessions", headers=bearer(ADMIN)).json()["sessions"]
    assert len(every) == 2
    assert client.get(base, headers=bearer(A)).json()["version"] == 0  # nothing changed
    assert client.post(base + "/step", json=step, headers=bearer(A)).status_code == 200
    reserved = client.post(
        "/v1/sessions",
        json={"params": tensors(P), "labels": {"optd/tenant": "b"}},
        headers=bearer(A),
    )
    assert_problem(reserved, 422, "invalid-config")


def test_quotas(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    limits = {"a": {"max_sessions": 3, "max_params": 100}, "b": {"rate": 2, "burst": 3}}
    client = make_client(api_keys_file=keys_file(tmp_path, limits))
    big = {"w": np.zeros(101, dtype=np.float32)}
    r = client.post("/v1/sessions", json={"params": tensors(big)}, headers=bearer(A))
    assert_problem(r, 429, "rate-limited")
    assert int(r.headers["Retry-After"]) > 0
    results: list[int] = []

    def create() -> None:
        r = client.post("/v1/sessions", json={"params": tensors(P)}, headers=bearer(A))
        results.append(r.status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] * 3 + [429] * 5  # racing creates cannot pass the quota
    sid = client.get("/v1/sessions", headers=bearer(A)).json()["sessions"][0]["id"]
    assert client.delete(f"/v1/sessions/{sid}", headers=bearer(A)).status_code == 204
    create()
    assert results[-1] == 201  # the delete gave the slot back
    codes = [client.get("/v1/sessions", headers=bearer(B)).status_code for _ in range(5)]
    assert codes[:3] == [200] * 3 and 429 in codes[3:]
    r = client.get("/v1/sessions", headers=bearer(B))
    if r.status_code == 429:
        assert int(r.headers["Retry-After"]) >= 1


def test_session_ttl_expires(make_client: Callable[..., TestClient], store_kind: str) -> None:
    client = make_client()
    r = client.post("/v1/sessions", json={"params": tensors(P), "ttl_s": 1})
    sid = r.json()["id"]
    assert (
        client.post(f"/v1/sessions/{sid}/step", json={"grads": {"w": [1, 1, 1]}}).status_code == 200
    )
    time.sleep(2.2)
    assert_problem(client.get(f"/v1/sessions/{sid}"), 404, "not-found")
    assert client.get("/v1/sessions").json()["sessions"] == []


def test_isolation_and_quota_across_two_processes(tmp_path: Path) -> None:
    """Two API processes on one Redis: a tenant's session is invisible to another tenant
    through either process, and racing creates through both cannot pass the quota."""
    import httpx

    from tests.procs import start, stop
    from tests.redisproc import RedisProc

    path = keys_file(tmp_path, {"b": {"max_sessions": 4}})
    with RedisProc() as redis:
        procs = [start({"OPTD_REDIS_URL": redis.url, "OPTD_API_KEYS_FILE": path}) for _ in "12"]
        urls = [u for _, u in procs]
        try:
            r = httpx.post(urls[0] + "/v1/sessions", json={"params": tensors(P)}, headers=bearer(A))
            sid = r.json()["id"]
            for url in urls:
                got = httpx.get(f"{url}/v1/sessions/{sid}", headers=bearer(B))
                assert_problem(got, 404, "not-found")
                assert httpx.get(f"{url}/v1/sessions/{sid}", headers=bearer(A)).status_code == 200
            codes: list[int] = []

            def create(i: int) -> None:
                r = httpx.post(
                    urls[i % 2] + "/v1/sessions",
                    json={"params": tensors(P)},
                    headers=bearer(B),
                    timeout=30,
                )
                codes.append(r.status_code)

            threads = [threading.Thread(target=create, args=(i,)) for i in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(codes) == [201] * 4 + [429] * 6
        finally:
            for p, _ in procs:
                stop(p)
