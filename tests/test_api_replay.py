"""An idempotent replay is self-consistent (issue #16): its parameters are the session's
state now, so `version`, `ETag`, `Optd-Version`, `step` describe that state too; the
replayed step's own figures travel under `replayed`. On every store."""

from __future__ import annotations

import json
import struct
from typing import Any

from fastapi.testclient import TestClient

from tests.fixtures_api import create, tensors
from tests.test_api_step import grads_at, params0, step_json


def st_metadata(body: bytes) -> dict[str, Any]:
    (n,) = struct.unpack("<Q", body[:8])
    meta: dict[str, Any] = json.loads(body[8 : 8 + n])["__metadata__"]
    return meta


def test_replay_after_the_session_moved_on_is_self_consistent(client: TestClient) -> None:
    """A replay's params are today's, so its version, ETag and step are today's too (a
    client that takes `version` as its next base_version is right); the replayed step's
    own figures travel under `replayed` (issue #16)."""
    sid = create(client, params0(), optimizer="adam", hyperparams={"lr": 0.1})
    hdr = {"Idempotency-Key": "k-moved"}
    g = tensors(grads_at(0))
    r1 = client.post(f"/v1/sessions/{sid}/step", json={"grads": g, "base_version": 0}, headers=hdr)
    assert r1.status_code == 200 and r1.json()["version"] == 1
    r = step_json(client, sid, grads_at(1))
    assert r.status_code == 200 and r.json()["version"] == 2
    now = r.json()
    r2 = client.post(f"/v1/sessions/{sid}/step", json={"grads": g, "base_version": 0}, headers=hdr)
    assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true"
    body = r2.json()
    assert r2.headers["ETag"] == '"2"' and r2.headers["Optd-Version"] == "2"
    assert r2.headers["Optd-Step"] == "2"
    assert body["version"] == 2 and body["step"] == 2 and body["staleness"] is None
    assert body["lr"] == now["lr"] and body["grad_norm"] == now["grad_norm"]
    assert body["params"] == now["params"]
    one = r1.json()
    assert body["replayed"] == {
        k: one[k] for k in ("version", "step", "lr", "grad_norm", "staleness")
    }
    assert body["replayed"]["staleness"] == 0
    # as safetensors: the same figures in __metadata__ and headers
    st = {"Idempotency-Key": "k-moved", "Accept": "application/x-safetensors"}
    r3 = client.post(f"/v1/sessions/{sid}/step", json={"grads": g, "base_version": 0}, headers=st)
    assert r3.status_code == 200 and r3.headers["Optd-Version"] == "2"
    meta = st_metadata(r3.content)
    assert meta["version"] == "2" and json.loads(meta["replayed"])["version"] == 1
    # the client's next gradient, based on the replay's version, is not stale
    assert (
        step_json(client, sid, grads_at(2), base_version=body["version"]).json()["staleness"] == 0
    )
    assert client.get(f"/v1/sessions/{sid}").json()["version"] == 3
