"""Slow clients against a real `optd serve` (issue #16): a body that trickles in slower
than the floor is cut with 408 problem+json and its connection closed, idle keep-alive
connections are closed, and a client hanging up mid-body is one info line in the log,
not an unhandled error. Raw sockets, bounded loops, no timing assertions."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.procs import output, start, stop
from tests.redisproc import RedisProc

SLOW = {
    "OPTD_BODY_TIMEOUT_S": "1",
    "OPTD_BODY_MIN_RATE_KIB": "1",
    "OPTD_KEEP_ALIVE_S": "1",
    "OPTD_LOG_LEVEL": "info",
}


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, object]]:
    env = dict(SLOW)
    if request.param == "redis":
        proc_r: RedisProc = request.getfixturevalue("redis_proc")
        env["OPTD_REDIS_URL"] = proc_r.url
    proc, url = start(env)
    try:
        yield url, proc
    finally:
        stop(proc)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.settimeout(0.05)
    return sock


def _post_head(sid: str, length: int) -> bytes:
    return (
        f"POST /v1/sessions/{sid}/step HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _trickle(sock: socket.socket, rounds: int = 300) -> bytes:
    """Send one byte every ~0.05 s until the server answers and closes (or `rounds` pass)."""
    got = b""
    sending = True
    for _ in range(rounds):
        if sending:
            try:
                sock.sendall(b" ")
            except OSError:
                sending = False
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break  # closed by the server
        got += data
    return got


def _closed_within(sock: socket.socket, rounds: int) -> bool:
    for _ in range(rounds):
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _session(url: str) -> str:
    r = httpx.post(url + "/v1/sessions", json={"params": {"b": [0.0, 0.0]}}, timeout=10)
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def test_trickled_bodies_get_408_and_are_closed(server: tuple[str, object]) -> None:
    url, _ = server
    sid = _session(url)
    socks = [_connect(url) for _ in range(8)]
    try:
        for s in socks:
            s.sendall(_post_head(sid, 10_000))
        answers = [_trickle(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    for a in answers:
        head, _, body = a.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), a[:200]
        assert b"application/problem+json" in head and b"connection: close" in head.lower()
        assert b"urn:optd:problem:request-timeout" in body
    # nothing was applied, and a normal step (fast body) works
    r = httpx.post(f"{url}/v1/sessions/{sid}/step", json={"grads": {"b": [1.0, 1.0]}}, timeout=10)
    assert r.status_code == 200 and r.json()["version"] == 1, r.text


def test_idle_keep_alive_is_closed(server: tuple[str, object]) -> None:
    url, _ = server
    sock = _connect(url)
    try:
        sock.settimeout(5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.settimeout(0.1)
        assert _closed_within(sock, 200)  # OPTD_KEEP_ALIVE_S=1; up to ~20 s allowed
    finally:
        sock.close()


def test_client_gone_mid_body_is_one_info_line(server: tuple[str, object]) -> None:
    url, proc = server
    sid = _session(url)
    sock = _connect(url)
    sock.sendall(_post_head(sid, 10_000) + b'{"grads": ')
    time.sleep(0.2)  # let the server start reading the body (no assertion on timing)
    sock.close()
    line = "client disconnected before sending the whole body"
    log = ""
    for _ in range(100):
        log = output(proc)  # type: ignore[arg-type]
        if line in log:
            break
        time.sleep(0.1)
    assert line in log, log
    assert "Traceback" not in log and "unhandled error" not in log, log
    r = httpx.get(f"{url}/v1/sessions/{sid}", timeout=10)
    assert r.status_code == 200 and r.json()["version"] == 0


def test_serve_passes_connection_limits_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """`optd serve` flags (and OPTD_* settings) reach uvicorn: idle keep-alive and the
    connection limit are bounded by the server, not left to uvicorn's defaults."""
    import uvicorn

    from app import cli

    for var in ("BODY_TIMEOUT_S", "BODY_MIN_RATE_KIB", "KEEP_ALIVE_S", "LIMIT_CONCURRENCY"):
        monkeypatch.delenv(f"OPTD_{var}", raising=False)
    monkeypatch.delenv("OPTD_REDIS_URL", raising=False)
    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    argv = ["serve", "--keep-alive-s", "2.5", "--limit-concurrency", "50"]
    assert cli.main([*argv, "--body-timeout-s", "3", "--body-min-rate-kib", "8"]) == 0
    assert seen["timeout_keep_alive"] == 2.5 and seen["limit_concurrency"] == 50
    from app.core.config import Settings

    s = Settings()
    assert (s.body_timeout_s, s.body_min_rate_kib) == (3.0, 8.0)
    seen.clear()
    monkeypatch.delenv("OPTD_LIMIT_CONCURRENCY")
    monkeypatch.delenv("OPTD_KEEP_ALIVE_S")
    assert cli.main(["serve"]) == 0
    assert seen["timeout_keep_alive"] == 5.0 and seen["limit_concurrency"] is None
