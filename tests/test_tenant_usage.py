"""Tenants' usage follows every change to a session's size, its labels and its lifetime
(issue #16: growth by PATCH or PUT state bypassed `max_state_bytes`; list entries went
stale)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests.fixtures_api import assert_problem, tensors
from tests.test_auth import ADMIN, A, B, bearer, keys_file

SMALL = {"w": np.zeros(3, dtype=np.float32)}  # Adam: 3 slots x 3 x 4 B = 36 B
BIG = {"w": np.zeros(6, dtype=np.float32)}  # 72 B


def new(client: TestClient, key: str, params: dict[str, np.ndarray], **extra: Any) -> str:
    r = client.post("/v1/sessions", json={"params": tensors(params), **extra}, headers=bearer(key))
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def create_code(client: TestClient) -> int:
    r = client.post("/v1/sessions", json={"params": tensors(SMALL)}, headers=bearer(A))
    return r.status_code


def test_growth_is_charged_and_shrink_refunded(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys_file=keys_file(tmp_path, {"a": {"max_state_bytes": 100}}))
    s1 = new(client, A, SMALL)
    r = client.patch(
        f"/v1/sessions/{s1}", json={"hyperparams": {"amsgrad": True}}, headers=bearer(A)
    )
    assert r.status_code == 200 and r.json()["state_bytes"] == 48
    s2 = new(client, A, SMALL)  # 48 + 36 = 84
    assert create_code(client) == 429  # 120 > 100: the amsgrad slot is counted
    r = client.patch(
        f"/v1/sessions/{s2}", json={"hyperparams": {"amsgrad": True}}, headers=bearer(A)
    )
    assert r.status_code == 200  # 96
    s3 = client.patch(
        f"/v1/sessions/{s1}", json={"hyperparams": {"amsgrad": False}}, headers=bearer(A)
    )
    assert s3.status_code == 200 and s3.json()["state_bytes"] == 36  # 84: the shrink refunds
    # a larger checkpoint restored into a small session (tenant b has no limits)
    big = new(client, B, BIG)
    state = client.get(f"/v1/sessions/{big}/state", headers=bearer(B)).json()
    r = client.put(f"/v1/sessions/{s1}/state", json=state, headers=bearer(A))
    assert_problem(r, 429, "rate-limited")  # 84 - 36 + 72 = 120 > 100
    assert client.get(f"/v1/sessions/{s1}", headers=bearer(A)).json()["num_params"] == 3
    assert client.delete(f"/v1/sessions/{s2}", headers=bearer(A)).status_code == 204  # 36
    r = client.put(f"/v1/sessions/{s1}/state", json=state, headers=bearer(A))
    assert r.status_code == 200, r.text  # 72
    assert create_code(client) == 429  # 108 > 100
    assert client.delete(f"/v1/sessions/{s1}", headers=bearer(A)).status_code == 204  # 0
    assert [create_code(client) for _ in range(3)] == [201, 201, 429]  # 36, 72, 108


def test_admin_restore_keeps_the_owner(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys_file=keys_file(tmp_path, {"a": {"max_sessions": 1}}))
    sid = new(client, A, SMALL, labels={"run": "x"})
    state = client.get(f"/v1/sessions/{sid}/state", headers=bearer(A)).json()
    r = client.put(f"/v1/sessions/{sid}/state", json=state, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    assert client.get(f"/v1/sessions/{sid}", headers=bearer(A)).json()["tenant"] == "a"
    listed = client.get("/v1/sessions?label=run=x", headers=bearer(A)).json()["sessions"]
    assert [s["id"] for s in listed] == [sid]
    assert client.delete(f"/v1/sessions/{sid}", headers=bearer(A)).status_code == 204
    assert create_code(client) == 201  # the one session a may hold was given back


def test_label_change_moves_the_list_entry(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys_file=keys_file(tmp_path))
    sid = new(client, A, SMALL, labels={"run": "old"})
    r = client.patch(f"/v1/sessions/{sid}", json={"labels": {"run": "new"}}, headers=bearer(A))
    assert r.status_code == 200
    for key in (A, ADMIN):
        found = client.get("/v1/sessions?label=run=new", headers=bearer(key)).json()
        assert [s["id"] for s in found["sessions"]] == [sid]
        stale = client.get("/v1/sessions?label=run=old", headers=bearer(key)).json()
        assert stale["sessions"] == []
    state = client.get(f"/v1/sessions/{sid}/state", headers=bearer(A)).json()
    state["meta"]["options"]["labels"] = {"run": "restored"}
    assert client.put(f"/v1/sessions/{sid}/state", json=state, headers=bearer(A)).status_code == 200
    found = client.get("/v1/sessions?label=run=restored", headers=bearer(A)).json()
    assert [s["id"] for s in found["sessions"]] == [sid]
    assert client.get("/v1/sessions?label=run=new", headers=bearer(A)).json()["sessions"] == []


def test_expired_sessions_give_their_quota_back(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    limits = {"a": {"max_sessions": 3, "max_state_bytes": 1000}}
    client = make_client(api_keys_file=keys_file(tmp_path, limits))
    for _ in range(3):
        new(client, A, SMALL, ttl_s=1)
    assert create_code(client) == 429
    time.sleep(2.2)  # the three expire (Redis: by its TTL; memory: on its clock)
    assert [create_code(client) for _ in range(4)] == [201, 201, 201, 429]
    for sid in [s["id"] for s in client.get("/v1/sessions", headers=bearer(A)).json()["sessions"]]:
        assert client.delete(f"/v1/sessions/{sid}", headers=bearer(A)).status_code == 204
    new(client, A, {"w": np.zeros(80, dtype=np.float32)}, ttl_s=1)  # 960 B
    assert [create_code(client) for _ in range(2)] == [201, 429]  # 996, then 1032 > 1000
    time.sleep(2.2)
    assert [create_code(client) for _ in range(3)] == [201, 201, 429]  # bytes came back too


def test_a_sharded_session_counts_its_shards_and_leaves_nothing_when_refused(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """K shards + the session count K + 1 sessions (DESIGN §3 "Quotas"); a create the
    quota refuses halfway leaves no shard behind."""
    client = make_client(api_keys_file=keys_file(tmp_path, {"a": {"max_sessions": 4}}))
    big = {"w": np.zeros(140_000, dtype=np.float32)}
    r = client.post("/v1/sessions", json={"params": tensors(big), "shards": 3}, headers=bearer(A))
    assert r.status_code == 201, r.text  # 4 sessions: the quota exactly
    assert create_code(client) == 429
    sid = r.json()["id"]
    assert client.delete(f"/v1/sessions/{sid}", headers=bearer(A)).status_code == 204
    r = client.post("/v1/sessions", json={"params": tensors(big), "shards": 4}, headers=bearer(A))
    assert_problem(r, 429, "rate-limited")  # 5 > 4: refused at the fifth
    # the four shards it made went with it: the quota is whole again, four more fit
    for _ in range(4):
        new(client, A, SMALL)
    assert create_code(client) == 429
