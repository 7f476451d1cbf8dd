"""Shared fixtures: one private redis-server per run, and every store test on both stores.

`store_kind` is parametrized over "memory" and "redis"; `store` is an opened store of
that kind (for Redis, on a freshly flushed private server); `make_store(**kw)` opens
more of them (e.g. a second "process" on the same Redis, or a tiny `chunk_bytes`).
Stores are bound to the shared loop of `tests.helpers.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.store import MemoryStore, RedisStore, SessionStore
from tests.helpers import close_loop, run
from tests.redis_cluster import LocalCluster
from tests.redisproc import RedisProc


@pytest.fixture(scope="session", autouse=True)
def _shared_loop() -> Iterator[None]:
    yield
    close_loop()


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProc]:
    """One private redis-server for the whole run (never the system one on 6379)."""
    with RedisProc() as proc:
        yield proc


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A private 3-master, 3-replica Redis Cluster for the whole run."""
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture(params=["memory", "redis", "cluster"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(
    store_kind: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., SessionStore]]:
    opened: list[SessionStore] = []
    proc: RedisProc | None = None
    cluster = store_kind == "cluster"
    if store_kind == "redis":
        proc = request.getfixturevalue("redis_proc")
        flusher = RedisStore.connect(proc.url)
        run(flusher.client.flushall())
        run(flusher.close())
    elif cluster:
        lc: LocalCluster = request.getfixturevalue("redis_cluster")
        lc.flushall()
        proc = lc.nodes[0]

    def make(**kw: Any) -> SessionStore:
        store: SessionStore
        if proc is None:
            kw.pop("chunk_bytes", None)
            kw.pop("cache_bytes", None)
            store = MemoryStore(**kw)
        else:
            store = RedisStore.connect(proc.url, cluster=cluster, **kw)
        opened.append(store)
        return store

    yield make
    for store in opened:
        run(store.close())


@pytest.fixture
def store(make_store: Callable[..., SessionStore]) -> SessionStore:
    return make_store()


pytest_plugins = ["tests.fixtures_api"]
