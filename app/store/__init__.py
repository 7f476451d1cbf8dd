"""Session stores: `open_store` picks the embedded memory store or Redis from the config."""

from __future__ import annotations

from app.store.base import IdempotencyRecord, SessionStore, SessionSummary, StoredSession
from app.store.memory import MemoryStore
from app.store.redis import RedisStore

__all__ = [
    "IdempotencyRecord",
    "MemoryStore",
    "RedisStore",
    "SessionStore",
    "SessionSummary",
    "StoredSession",
    "open_store",
]


def open_store(
    redis_url: str | None,
    *,
    cluster: bool = False,
    chunk_bytes: int = 64 * 2**20,
    cache_bytes: int = 1 * 2**30,
    idempotency_ttl_s: int = 86400,
    wait_replicas: int = 0,
    log_steps: int = 8,
    log_min_bytes: int = 2**20,
    timeout_s: float = 5.0,
) -> SessionStore:
    """The memory store when no URL is given, else a Redis (Cluster) store. Nothing is
    contacted here: call `await store.ping()` at start-up to fail early and clearly."""
    if redis_url is None:
        return MemoryStore(idempotency_ttl_s=idempotency_ttl_s)
    return RedisStore.connect(
        redis_url,
        cluster=cluster,
        chunk_bytes=chunk_bytes,
        cache_bytes=cache_bytes,
        idempotency_ttl_s=idempotency_ttl_s,
        wait_replicas=wait_replicas,
        log_steps=log_steps,
        log_min_bytes=log_min_bytes,
        timeout_s=timeout_s,
    )
