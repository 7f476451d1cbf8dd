"""Coordination primitives on both stores: idempotency claims, the advisory lock and
sync-round contributions."""

from __future__ import annotations

import numpy as np
import pytest

from app.problems import Conflict, IdempotencyMismatch, NotFound
from app.store import IdempotencyRecord, SessionStore
from app.store.base import Locked
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


def test_a_step_locks_with_its_load_and_unlocks_with_its_commit(store: SessionStore) -> None:
    make(store)
    got = run(store.load("s1", take=True, lock=("a", 10_000)))
    assert not run(store.try_lock("s1", "b", 10_000))  # the load took it
    with pytest.raises(Locked):
        run(store.load("s1", take=True, lock=("b", 10_000)))
    run(store.load("s1", take=True, lock=("a", 10_000)))  # the holder may load again
    with pytest.raises(Conflict):  # a lost compare-and-set keeps the lock
        run(store.commit("s1", 7, b"m", got.slots, unlock="a"))
    assert not run(store.try_lock("s1", "b", 10_000))
    run(store.commit("s1", got.version, b"m", got.slots, unlock="a"))
    assert run(store.try_lock("s1", "b", 10_000))  # released by the commit
    with pytest.raises(NotFound):  # no lock is left on a session that does not exist
        run(store.load("nope", lock=("c", 10_000)))


def test_an_optimistic_commit_yields_to_a_lock_holder(store: SessionStore) -> None:
    make(store)
    got = run(store.load("s1", take=True, cached=True))
    assert run(store.try_lock("s1", "other", 10_000))
    with pytest.raises(Conflict):  # someone is stepping under the lock: queue behind it
        run(store.commit("s1", got.version, b"m", got.slots, unlock="?"))
    run(store.unlock("s1", "other"))
    assert run(store.commit("s1", got.version, b"m", got.slots, unlock="?")) == 1


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


def test_a_recount_never_runs_across_a_pending_charge(store: SessionStore) -> None:
    """quota_gen/quota_recount: a recount replaces the counters only if nothing changed
    them since it began, and none starts while a charged write is pending."""
    assert run(store.quota_add("t", 1, 10, 1, None, pending=1))
    assert run(store.quota_gen("t", 60_000)) is None  # its session may not be listed yet
    assert run(store.quota_gen("t", 0)) is not None  # unless its writer looks dead
    assert run(store.quota_add("t", 0, 0, None, None, pending=-1))
    gen = run(store.quota_gen("t", 60_000))
    assert gen is not None
    assert not run(store.quota_add("t", 1, 10, 1, None))  # at the limit
    assert run(store.quota_add("t", 0, 5, None, None))  # a change: the recount is stale
    assert not run(store.quota_recount("t", gen, 0, 0))
    assert not run(store.quota_add("t", 1, 10, 1, None))  # still counted
    gen = run(store.quota_gen("t", 60_000))
    assert gen is not None and run(store.quota_recount("t", gen, 0, 0))
    assert run(store.quota_add("t", 1, 10, 1, None))  # the recount freed the slot
