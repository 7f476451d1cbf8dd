"""Redis going away and coming back: 503 with Retry-After, /readyz 503, then recovery
with every acknowledged step present (AOF with appendfsync always)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.fixtures_api import assert_problem, create, decode
from tests.redisproc import RedisProc


@pytest.fixture
def aof_redis() -> Iterator[RedisProc]:
    with RedisProc(appendonly=True, appendfsync="always") as proc:
        yield proc


def test_redis_down_then_back(aof_redis: RedisProc) -> None:
    with TestClient(create_app(Settings(redis_url=aof_redis.url))) as client:
        sid = create(
            client, {"x": np.zeros(3, dtype=np.float32)}, optimizer="sgd", hyperparams={"lr": 1.0}
        )
        for _ in range(5):
            assert (
                client.post(
                    f"/v1/sessions/{sid}/step", json={"grads": {"x": [1, 1, 1]}}
                ).status_code
                == 200
            )
        aof_redis.kill()
        r = client.post(f"/v1/sessions/{sid}/step", json={"grads": {"x": [1, 1, 1]}})
        body = assert_problem(r, 503, "store-unavailable")
        assert r.headers["Retry-After"] == str(body["retry_after"])
        assert_problem(client.get("/readyz"), 503, "store-unavailable")
        assert_problem(client.get(f"/v1/sessions/{sid}"), 503, "store-unavailable")
        aof_redis.restart()
        assert client.get("/readyz").status_code == 200
        r = client.post(f"/v1/sessions/{sid}/step", json={"grads": {"x": [1, 1, 1]}})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 6  # the five acknowledged steps survived, plus this one
        np.testing.assert_array_equal(decode(r.json()["params"])["x"], np.full(3, -6, np.float32))


def test_app_refuses_to_start_without_redis() -> None:
    from tests.redisproc import free_port

    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(Exception) as info, TestClient(app):
        pass
    assert "redis" in str(info.value).lower()
