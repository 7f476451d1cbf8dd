"""Coordination primitives on both stores: idempotency claims, the advisory lock and
sync-round contributions."""

from __future__ import annotations

import numpy as np
import pytest

from app.problems import Conflict, IdempotencyMismatch, NotFound
from app.store import IdempotencyRecord, SessionStore
from tests.helpers import run


def make(store: SessionStore, sid: str = "s1") -> None:
    run(store.create(sid, b"{}", {"param": np.zeros(4, np.float32)}, {}))


def test_idempotency_claim_inflight_then_record(store: SessionStore) -> None:
    make(store)
    assert run(store.claim_idempotency("s1", "k", "fp1", 30)) is None
    with pytest.raises(Conflict) as err:
        run(store.claim_idempotency("s1", "k", "fp1", 30))
    assert err.value.extra["in_flight"] is True
    with pytest.raises(IdempotencyMismatch):
        run(store.claim_idempotency("s1", "k", "fp2", 30))
    assert run(store.get_idempotency("s1", "k")) is None  # a marker is not a record
    run(store.commit("s1", 0, b"{}", {}, IdempotencyRecord("k", "fp1", b"resp")))
    rec = run(store.claim_idempotency("s1", "k", "fp1", 30))
    assert rec is not None and (rec.fingerprint, rec.response) == ("fp1", b"resp")
    with pytest.raises(NotFound):
        run(store.claim_idempotency("nope", "k", "fp1", 30))


def test_idempotency_release_frees_the_key(store: SessionStore) -> None:
    make(store)
    assert run(store.claim_idempotency("s1", "k", "fp1", 30)) is None
    run(store.release_idempotency("s1", "k", "other"))  # not ours: stays
    with pytest.raises(Conflict):
        run(store.claim_idempotency("s1", "k", "fp1", 30))
    run(store.release_idempotency("s1", "k", "fp1"))
    assert run(store.claim_idempotency("s1", "k", "fp1", 30)) is None


def test_lock_is_exclusive_and_expires(store: SessionStore) -> None:
    make(store)
    assert run(store.try_lock("s1", "a", 10_000))
    assert not run(store.try_lock("s1", "b", 10_000))
    run(store.unlock("s1", "b"))  # not the holder: nothing happens
    assert not run(store.try_lock("s1", "b", 10_000))
    run(store.unlock("s1", "a"))
    assert run(store.try_lock("s1", "b", 1))
    import time

    time.sleep(0.05)
    assert run(store.try_lock("s1", "c", 10_000))  # b's lock expired


def test_barrier_counts_distinct_workers(store: SessionStore) -> None:
    make(store)
    assert run(store.barrier_add("s1", 0, "w1", b"g1", 60)) == (1, True)
    assert run(store.barrier_add("s1", 0, "w1", b"other", 60)) == (1, False)
    assert run(store.barrier_add("s1", 0, "w2", b"g2", 60)) == (2, True)
    assert run(store.barrier_add("s1", 1, "w1", b"next", 60)) == (1, True)
    assert run(store.barrier_get("s1", 0)) == {"w1": b"g1", "w2": b"g2"}
    run(store.barrier_clear("s1", 0))
    assert run(store.barrier_get("s1", 0)) == {}
    assert run(store.barrier_get("s1", 1)) == {"w1": b"next"}
