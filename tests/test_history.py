"""A session's history (issue #19) on every store: capping, the downsampled tail, paging
with `since`, deletion with the session, tenant isolation, and the points steps and sync
rounds leave behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from app.store import RedisStore, SessionStore
from app.store.history import History
from tests.fixtures_api import assert_problem, create, tensors
from tests.helpers import run

P = {"w": np.zeros(3, dtype=np.float32)}


def pt(v: int) -> bytes:
    return orjson.dumps({"version": v, "loss": 1.0 / v})


def versions(points: list[bytes]) -> list[int]:
    return [orjson.loads(p)["version"] for p in points]


def test_the_store_caps_downsamples_and_pages(store: SessionStore) -> None:
    run(store.create("h1", b"{}", {"param": np.zeros(2, dtype=np.float32)}, {}))
    for v in range(1, 101):
        run(store.history_append("h1", v, pt(v), 10, 64))
    page = run(store.history_read("h1", -1, 1000))
    got = versions(page.points)
    assert page.recent_from == 91 and got[-10:] == list(range(91, 101))
    tail = got[:-10]
    # the tail spans the run at an even stride, at most `cap` points, all older than recent
    assert page.stride == 16 and tail == [16, 32, 48, 64, 80]
    assert got == sorted(got)
    # the same as the pure algorithm (the Redis store runs it in Lua)
    ref = History()
    for v in range(1, 101):
        ref.add(v, pt(v), 10, 64)
    assert versions(ref.read(-1, 1000).points) == got and ref.stride == page.stride
    # since pages: exclusive, oldest first, limit respected, through tail then recent
    assert versions(run(store.history_read("h1", 48, 3)).points) == [64, 80, 91]
    assert versions(run(store.history_read("h1", 98, 10)).points) == [99, 100]
    assert run(store.history_read("h1", 100, 10)).points == []


def test_history_goes_with_the_session(store: SessionStore) -> None:
    run(store.create("h2", b"{}", {"param": np.zeros(2, dtype=np.float32)}, {}))
    for v in range(1, 30):
        run(store.history_append("h2", v, pt(v), 8, 64))
    if isinstance(store, RedisStore):
        assert run(store.client.exists("optd:{h2}:hist", "optd:{h2}:hist:tail")) == 2
    assert run(store.delete("h2"))
    assert run(store.history_read("h2", -1, 100)).points == []
    run(store.history_append("h2", 30, pt(30), 8, 64))  # a step racing the delete: no orphan
    assert run(store.history_read("h2", -1, 100)).points == []
    if isinstance(store, RedisStore):

        async def left() -> list[bytes]:
            return [k async for k in store.client.scan_iter("optd:{h2}:*")]

        assert run(left()) == []


def test_the_store_counts_the_bytes_history_holds(store: SessionStore) -> None:
    """The charge is the high-water mark of the points' bytes (each copy), in whole blocks,
    returned as it grows; Redis (Lua) and the pure algorithm agree to the byte."""
    run(store.create("h3", b"{}", {"param": np.zeros(2, dtype=np.float32)}, {}))
    ref, total = History(), 0
    for v in range(1, 200):
        due = run(store.history_append("h3", v, pt(v), 10, 64))
        assert due == ref.add(v, pt(v), 10, 64) and due % 64 == 0
        total += due
        assert ref.charged == total >= ref.nbytes
    assert run(store.history_charged("h3")) == total > 0
    # what it holds now: the last 10 points and the tail's, each point's bytes once a copy
    page = run(store.history_read("h3", -1, 1000))
    recent = [p for p in page.points if orjson.loads(p)["version"] >= (page.recent_from or 0)]
    tail_versions = range(page.stride, 200, page.stride)
    assert ref.nbytes == sum(map(len, recent)) + sum(len(pt(v)) for v in tail_versions)
    assert run(store.history_append("h3", 199, pt(199), 10, 64)) == 0  # the same point again
    assert run(store.delete("h3")) and run(store.history_charged("h3")) == 0
    assert run(store.history_append("h3", 200, pt(200), 10, 64)) == 0  # gone: nothing due


def test_history_counts_in_the_tenants_quota(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """Steps never fail for their history, but it counts against new sessions (a recount
    includes it too: the refusal stands), and deleting the session gives it back."""
    from tests.test_auth import A, bearer, keys_file

    client = make_client(api_keys_file=keys_file(tmp_path, {"a": {"max_state_bytes": 6000}}))
    new = {"params": tensors(P)}  # Adam: 3 slots x 3 x 4 B = 36 B
    sid = client.post("/v1/sessions", json=new, headers=bearer(A)).json()["id"]
    grads = {"grads": tensors({"w": np.full(3, 0.1, dtype=np.float32)}), "loss": 0.5}
    for _ in range(40):  # ~40 points of ~110 B in both sets: > 6000 B, charged in blocks
        r = client.post(f"/v1/sessions/{sid}/step", json=grads, headers=bearer(A))
        assert r.status_code == 200, r.text
    assert_problem(client.post("/v1/sessions", json=new, headers=bearer(A)), 429, "rate-limited")
    time.sleep(1.1)  # past the recount interval: the recount counts the history as well
    assert_problem(client.post("/v1/sessions", json=new, headers=bearer(A)), 429, "rate-limited")
    assert client.delete(f"/v1/sessions/{sid}", headers=bearer(A)).status_code == 204
    assert client.post("/v1/sessions", json=new, headers=bearer(A)).status_code == 201


def step(client: TestClient, sid: str, loss: float | None, **kw: Any) -> Any:
    body: dict[str, Any] = {"grads": tensors({"w": np.full(3, 0.1, dtype=np.float32)}), **kw}
    if loss is not None:
        body["loss"] = loss
    r = client.post(f"/v1/sessions/{sid}/step", json=body, headers={"Prefer": "return=minimal"})
    assert r.status_code in (200, 204), r.text
    return r


def test_steps_leave_points_and_history_pages(make_client: Callable[..., TestClient]) -> None:
    client = make_client(history_points=16)
    sid = create(client, P, optimizer="adam", hyperparams={"lr": 0.01})
    assert client.get(f"/v1/sessions/{sid}/history").json()["points"] == []
    for i in range(1, 41):
        step(client, sid, 1.0 / i if i % 5 else None, worker=f"w{i % 2}", base_version=i - 1)
    r = client.get(f"/v1/sessions/{sid}/history")
    assert r.status_code == 200
    page = r.json()
    assert page["version"] == 40 and page["recent_from"] == 25 and not page["more"]
    pts = page["points"]
    assert [p["version"] for p in pts][-16:] == list(range(25, 41))
    last = pts[-1]
    assert last["loss"] is None and last["worker"] == "w0"  # 40: a step without a loss
    assert last["lr"] == 0.01 and last["grad_norm"] > 0 and last["staleness"] == 0
    assert [p["loss"] is None for p in pts[-16:]] == [v % 5 == 0 for v in range(25, 41)]
    assert abs(pts[-2]["loss"] - 1 / 39) < 1e-12 and abs(time_of(pts[-1]) - time_of(pts[0])) < 60
    # paging walks the run: a small limit, next_since, more
    seen, since = [], -1
    while True:
        q = client.get(f"/v1/sessions/{sid}/history", params={"since": since, "limit": 7}).json()
        seen += [p["version"] for p in q["points"]]
        since = q["next_since"]
        if not q["more"]:
            break
    assert seen == [p["version"] for p in pts]
    assert_problem(client.get(f"/v1/sessions/{sid}/history?limit=0"), 400)
    assert_problem(client.get("/v1/sessions/nope/history"), 404, "not-found")
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert_problem(client.get(f"/v1/sessions/{sid}/history"), 404, "not-found")


def time_of(p: dict[str, Any]) -> float:
    return float(p["t"])


def test_a_sync_round_is_one_point_with_its_contributors_and_mean_loss(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    sid = create(client, P, optimizer="sgd", mode="sync", workers=2)
    g = tensors({"w": np.ones(3, dtype=np.float32)})
    first = client.post(
        f"/v1/sessions/{sid}/step?wait=0", json={"grads": g, "worker": "a", "loss": 1.0}
    )
    assert first.status_code == 202
    r = client.post(f"/v1/sessions/{sid}/step", json={"grads": g, "worker": "b", "loss": 3.0})
    assert r.status_code == 200, r.text
    (p,) = client.get(f"/v1/sessions/{sid}/history").json()["points"]
    assert p["version"] == 1 and p["contributors"] == ["a", "b"] and p["loss"] == 2.0
    assert client.get(f"/v1/sessions/{sid}").json()["last_loss"] == 2.0


def test_tenants_see_only_their_own_history(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(api_keys="a:key-of-tenant-a-123456,b:key-of-tenant-b-123456")
    a = {"Authorization": "Bearer key-of-tenant-a-123456"}
    b = {"Authorization": "Bearer key-of-tenant-b-123456"}
    r = client.post("/v1/sessions", json={"params": tensors(P)}, headers=a)
    sid = r.json()["id"]
    grads = {"grads": tensors({"w": np.ones(3, dtype=np.float32)}), "loss": 0.5}
    assert client.post(f"/v1/sessions/{sid}/step", json=grads, headers=a).status_code == 200
    assert client.get(f"/v1/sessions/{sid}/history", headers=a).json()["points"][0]["loss"] == 0.5
    assert_problem(client.get(f"/v1/sessions/{sid}/history", headers=b), 404, "not-found")
    assert_problem(client.get(f"/v1/sessions/{sid}/events", headers=b), 404, "not-found")
    assert_problem(client.get(f"/v1/sessions/{sid}/history"), 401, "unauthorized")


def test_history_off_keeps_nothing(make_client: Callable[..., TestClient]) -> None:
    client = make_client(history_points=0)
    sid = create(client, P)
    step(client, sid, 1.0)
    assert client.get(f"/v1/sessions/{sid}/history").json()["points"] == []


def test_optd_open_and_the_sdk_name_the_dashboard(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    from optd_client import AsyncClient, Client

    from app.cli import main

    opened: list[str] = []

    class Browser:
        def open(self, url: str) -> None:
            opened.append(url)

    monkeypatch.setattr(webbrowser, "get", lambda: Browser())
    assert main(["open", "abc_DEF-1", "--url", "http://example.test:9/"]) == 0
    assert capsys.readouterr().out == "http://example.test:9/ui/sessions/abc_DEF-1\n"
    assert opened == ["http://example.test:9/ui/sessions/abc_DEF-1"]

    def none() -> None:
        raise webbrowser.Error("no browser")

    monkeypatch.setattr(webbrowser, "get", none)
    monkeypatch.setenv("OPTD_URL", "http://other.test:8000")
    assert main(["open"]) == 0  # no browser here: the URL is printed all the same
    assert capsys.readouterr().out == "http://other.test:8000/ui\n"
    with Client("http://example.test:9") as c:
        assert c.session("s1").ui_url == "http://example.test:9/ui/sessions/s1"
    assert AsyncClient("http://a.test").session("s2").ui_url == "http://a.test/ui/sessions/s2"
