"""API fixtures: an app per test on the store of `store_kind` (memory and redis).

TestClient runs the app's lifespan on its own loop, so the app opens its own store
exactly as `optd serve` does (Redis: a private redis-server, flushed per test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.redis_cluster import LocalCluster
from tests.redisproc import RedisProc


@pytest.fixture
def settings(store_kind: str, request: pytest.FixtureRequest) -> Settings:
    if store_kind == "redis":
        proc: RedisProc = request.getfixturevalue("redis_proc")
        with redis.Redis.from_url(proc.url) as r:
            r.flushall()
        # every session keeps a step log (snapshot every 8th step): the log is exercised
        # by every API test; processes started by tests run with the defaults
        return Settings(redis_url=proc.url, log_min_bytes=0)
    if store_kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return Settings(redis_url=cluster.url, redis_cluster=True, log_min_bytes=0, log_steps=3)
    return Settings(redis_url=None)


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        s = settings.model_copy(update=overrides)
        client = TestClient(create_app(s))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def tensor(a: np.ndarray) -> dict[str, Any]:
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.ravel().tolist()}


def tensors(d: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: tensor(v) for k, v in d.items()}


def decode(obj: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v["data"], dtype=v["dtype"]).reshape(v["shape"]) for k, v in obj.items()}


def create(client: TestClient, params: dict[str, np.ndarray], **config: Any) -> str:
    r = client.post("/v1/sessions", json={"params": tensors(params), **config})
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def assert_problem(r: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"] and body["title"]
    if slug is not None:
        assert body["type"] == f"urn:optd:problem:{slug}", body
    return body
