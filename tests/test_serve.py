"""`optd serve` as a real process: the embedded default, Redis, and the refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.procs import ROOT, start, stop
from tests.redisproc import RedisProc, free_port


def train_toy(url: str, headers: dict[str, str] | None = None) -> float:
    """Linear regression with httpx: the README's quick start, shortened."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3
    with httpx.Client(base_url=url, timeout=10, headers=headers) as http:
        r = http.post(
            "/v1/sessions",
            json={
                "optimizer": "adam",
                "hyperparams": {"lr": 0.1},
                "params": {"w": [0.0, 0.0, 0.0], "b": 0.0},
            },
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        w, b = np.zeros(3), 0.0
        for _ in range(150):
            err = x @ w + b - y
            grads = {"w": (2 * x.T @ err / len(y)).tolist(), "b": float(2 * err.mean())}
            p = http.post(f"/v1/sessions/{sid}/step", json={"grads": grads}).json()["params"]
            w, b = np.asarray(p["w"]["data"]), p["b"]["data"][0]
        return float(np.mean((x @ w + b - y) ** 2))


def test_serve_embedded_trains() -> None:
    proc, url = start({})
    try:
        assert train_toy(url) < 1e-2
    finally:
        out = stop(proc)
    assert "embedded in-memory store" in out.splitlines()[0]


@pytest.fixture
def redis_aof() -> Iterator[RedisProc]:
    # the flags docker-compose.yml gives its Redis
    with RedisProc(appendonly=True, appendfsync="everysec") as proc:
        yield proc


def test_serve_redis_two_workers(redis_aof: RedisProc) -> None:
    proc, url = start({"OPTD_REDIS_URL": redis_aof.url}, "--workers", "2")
    try:
        assert train_toy(url) < 1e-2
    finally:
        out = stop(proc)
    assert f"Redis at {redis_aof.url}" in out


def test_serve_refuses_unreachable_redis() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTD_")}
    env["OPTD_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "cannot start" in r.stderr and str(port) in r.stderr
