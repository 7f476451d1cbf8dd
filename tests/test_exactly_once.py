"""Exactly-once steps and crashes: a cut connection retried with the same key, an API
process killed with SIGKILL mid-run, and a bounded soak of mixed traffic."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from app.optim.local import LocalOptimizer
from tests.procs import start, stop
from tests.redisproc import RedisProc
from tests.test_workers import create, run_threads


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProc]:
    with RedisProc(appendonly=True, appendfsync="always") as proc:
        yield proc


class CutAfterForwarding:
    """A one-shot TCP proxy: forwards the request, waits for the server's whole
    response (so the step is committed), then closes the client's connection without
    sending it — the client cannot know whether its step was applied."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            up.sendall(head + b"\r\n\r\n" + body)
            reply = up.recv(65536)  # the server has answered: the commit is done
            assert reply.startswith(b"HTTP/1.1 200")
        self.sock.close()


def test_cut_connection_retry_applies_once(redis: RedisProc) -> None:
    proc, url = start({"OPTD_REDIS_URL": redis.url})
    try:
        sid = create(url, {"x": [0.0]}, optimizer="sgd", hyperparams={"lr": 1.0})
        proxy = CutAfterForwarding(int(url.rsplit(":", 1)[1]))
        body = {"grads": {"x": [1.0]}}
        headers = {"Idempotency-Key": "step-1"}
        with pytest.raises(httpx.TransportError):
            httpx.post(
                f"http://127.0.0.1:{proxy.port}/v1/sessions/{sid}/step",
                json=body,
                headers=headers,
                timeout=10,
            )
        proxy.thread.join(10)
        r = httpx.post(f"{url}/v1/sessions/{sid}/step", json=body, headers=headers)
        assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
        assert r.json()["version"] == 1 and r.json()["params"]["x"]["data"] == [-1.0]
        assert httpx.get(f"{url}/v1/sessions/{sid}").json()["version"] == 1
    finally:
        stop(proc)


def test_sigkill_mid_run_loses_no_acknowledged_step(redis: RedisProc) -> None:
    """Adam with a constant gradient: the state after V steps does not depend on their
    order, so params and every slot must equal V local steps, V >= acknowledged steps."""
    procs = [start({"OPTD_REDIS_URL": redis.url}) for _ in range(2)]
    urls = [u for _, u in procs]
    n = 50_000  # large enough that a kill lands inside steps, not between them
    sid = create(
        urls[0],
        {"w": {"shape": [n], "dtype": "float32", "data": [0.5] * n}},
        optimizer="adam",
        hyperparams={"lr": 0.01},
    )
    g = np.full(n, 0.25, dtype=np.float32)
    acked: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 4

    def worker(i: int) -> None:
        from safetensors.numpy import save

        body = save({"w": g})
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop_at:
                url = urls[i % 2]
                try:
                    r = http.post(
                        f"{url}/v1/sessions/{sid}/step",
                        content=body,
                        headers={
                            "content-type": "application/x-safetensors",
                            "prefer": "return=minimal",
                        },
                    )
                except httpx.TransportError:
                    urls[i % 2] = urls[(i + 1) % 2]  # fail over to the survivor
                    continue
                assert r.status_code == 204, r.text
                with lock:
                    acked.append(
                        int(r.headers.get("Optd-Replayed-Version", r.headers["Optd-Version"]))
                    )

    killer = threading.Timer(1.5, lambda: os.kill(procs[1][0].pid, signal.SIGKILL))
    killer.start()
    try:
        run_threads(4, worker)
    finally:
        killer.join()
        for p, _ in procs:
            stop(p)
    proc, url = start({"OPTD_REDIS_URL": redis.url})
    try:
        state = httpx.get(f"{url}/v1/sessions/{sid}/state", timeout=30).json()
    finally:
        stop(proc)
    version = state["version"]
    assert len(set(acked)) == len(acked) and max(acked) <= version
    assert state["meta"]["step"] == version  # every version is one whole step
    ref = LocalOptimizer("adam", {"w": np.full(n, 0.5, dtype=np.float32)}, {"lr": 0.01})
    for _ in range(version):
        ref.step({"w": g})
    for slot in ("param", "exp_avg", "exp_avg_sq"):
        got = np.asarray(state["tensors"][f"{slot}/w"]["data"], dtype=np.float32)
        want = ref.params["w"] if slot == "param" else ref.slot(slot, "w")
        np.testing.assert_array_equal(got, want)


def test_soak_mixed_traffic(redis: RedisProc) -> None:
    """Steps, reads and checkpoints from several processes for SOAK_S seconds, then a
    consistency check of every session against a local replay."""
    seconds = float(os.environ.get("OPTD_SOAK_S", "20"))
    procs = [start({"OPTD_REDIS_URL": redis.url}) for _ in range(2)]
    urls = [u for _, u in procs]
    sids = [
        create(urls[0], {"w": [0.1, 0.2, 0.3]}, optimizer="nadam", dtype="float64")
        for _ in range(3)
    ]
    stop_at = time.monotonic() + seconds
    steps = [0, 0, 0]
    lock = threading.Lock()

    def worker(i: int) -> None:
        rng = np.random.default_rng(i)
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop_at:
                k = int(rng.integers(3))
                url, sid = urls[int(rng.integers(2))], sids[k]
                roll = rng.random()
                if roll < 0.7:
                    r = http.post(
                        f"{url}/v1/sessions/{sid}/step", json={"grads": {"w": [1.0, -1.0, 0.5]}}
                    )
                    assert r.status_code == 200, r.text
                    with lock:
                        steps[k] += 1
                elif roll < 0.9:
                    assert http.get(f"{url}/v1/sessions/{sid}/params").status_code == 200
                else:
                    r = http.get(
                        f"{url}/v1/sessions/{sid}/state",
                        headers={"accept": "application/x-safetensors"},
                    )
                    assert r.status_code == 200

    try:
        run_threads(6, worker)
        for k, sid in enumerate(sids):
            state = httpx.get(f"{urls[1]}/v1/sessions/{sid}/state").json()
            assert state["version"] == steps[k] == state["meta"]["step"]
            ref = LocalOptimizer("nadam", {"w": np.array([0.1, 0.2, 0.3])}, dtype="float64")
            for _ in range(steps[k]):
                ref.step({"w": np.array([1.0, -1.0, 0.5])})
            got = np.asarray(state["tensors"]["param/w"]["data"])
            np.testing.assert_array_equal(got, ref.params["w"])
    finally:
        for p, _ in procs:
            stop(p)
