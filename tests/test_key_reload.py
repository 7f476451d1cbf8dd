"""Keys follow the key file (revocation within seconds, SIGHUP), 401s name the Bearer
scheme, and /metrics can require a key (issue #16 item 9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core import keyfile
from app.core.auth import entry_for
from app.core.keyfile import KeySource
from app.problems import Unauthorized
from tests.fixtures_api import assert_problem, tensors
from tests.test_auth import A, B, bearer, keys_file

P = {"w": np.zeros(3, dtype=np.float32)}


def rewrite(path: str, *keys: tuple[str, str]) -> None:
    doc = {"tenants": {}, "keys": [entry_for(t, k) for t, k in keys]}
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def test_a_removed_key_stops_working_without_a_restart(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyfile, "CHECK_S", 0.0)  # look at the file on every request
    path = keys_file(tmp_path)
    client = make_client(api_keys_file=path)
    r = client.post("/v1/sessions", json={"params": tensors(P)}, headers=bearer(A))
    assert r.status_code == 201
    sid = r.json()["id"]
    rewrite(path, ("b", B))  # A revoked
    assert_problem(client.get("/v1/sessions", headers=bearer(A)), 401, "unauthorized")
    step = {"grads": {"w": [1.0, 1.0, 1.0]}}
    r = client.post(f"/v1/sessions/{sid}/step", json=step, headers=bearer(A))
    assert_problem(r, 401, "unauthorized")  # the fast step route too
    assert client.get("/v1/sessions", headers=bearer(B)).status_code == 200
    Path(path).write_text("{not json")  # a broken file keeps the last good keys
    assert client.get("/v1/sessions", headers=bearer(B)).status_code == 200
    assert client.get("/v1/sessions", headers=bearer(A)).status_code == 401
    rewrite(path, ("a", A))  # A is back; B is gone
    assert client.get(f"/v1/sessions/{sid}", headers=bearer(A)).status_code == 200
    assert client.get("/v1/sessions", headers=bearer(B)).status_code == 401


def test_reload_is_throttled_and_sighup_forces_it(tmp_path: Path) -> None:
    now = [100.0]
    path = keys_file(tmp_path)
    source = KeySource(path, None, clock=lambda: now[0])
    assert source.authenticate(f"Bearer {A}").tenant == "a"
    rewrite(path, ("b", B))
    assert source.authenticate(f"Bearer {A}").tenant == "a"  # checked at most once a second
    now[0] += keyfile.CHECK_S
    with pytest.raises(Unauthorized):
        source.authenticate(f"Bearer {A}")
    rewrite(path, ("a", A))
    source.force()  # what SIGHUP calls: the next request reloads, whatever the clock says
    assert source.authenticate(f"Bearer {A}").tenant == "a"


def test_401_names_the_bearer_scheme(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys_file=keys_file(tmp_path))
    sid = client.post("/v1/sessions", json={"params": tensors(P)}, headers=bearer(A)).json()["id"]
    for r in (
        client.get("/v1/sessions"),
        client.get("/v1/sessions", headers=bearer("wrong")),
        client.post(f"/v1/sessions/{sid}/step", json={"grads": {"w": [1.0, 1.0, 1.0]}}),
    ):
        assert_problem(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_metrics_may_require_a_key(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    open_metrics = make_client(api_keys_file=keys_file(tmp_path))
    assert open_metrics.get("/metrics").status_code == 200  # the default: scrapers need no key
    client = make_client(api_keys_file=keys_file(tmp_path), metrics_auth=True)
    r = client.get("/metrics")
    assert_problem(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.get("/metrics", headers=bearer("nope")), 401, "unauthorized")
    assert client.get("/metrics", headers=bearer(B)).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes never need one


def test_sighup_reloads_a_running_server(tmp_path: Path) -> None:
    """`optd serve` takes SIGHUP as "reload the keys" (its default action would end it)."""
    import os
    import signal

    import httpx

    from tests.procs import output, start, stop

    path = keys_file(tmp_path)
    proc, url = start({"OPTD_API_KEYS_FILE": path})
    try:
        rewrite(path, ("b", B))
        os.kill(proc.pid, signal.SIGHUP)
        r = httpx.get(url + "/v1/sessions", headers=bearer(A), timeout=30)
        assert r.status_code == 401
        assert proc.poll() is None
        assert "API keys reloaded" in output(proc)
    finally:
        stop(proc)
