"""Coordination primitives on both stores: idempotency claims, the advisory lock and
sync-round contributions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.problems import Conflict, IdempotencyMismatch, NotFound
from app.store import IdempotencyRecord, SessionStore
from app.store.base import ClaimLost, Locked
from tests.helpers import run


def make(store: SessionStore, sid: str = "s1") -> None:
    run(store.create(sid, b"{}", {"param": np.zeros(4, np.float32)}, {}))


def test_idempotency_claim_inflight_then_record(store: SessionStore) -> None:
    make(store)
    assert run(store.claim_idempotency("s1", "k", "fp1", 30, "", "o1")) is None
    with pytest.raises(Conflict) as err:
        run(store.claim_idempotency("s1", "k", "fp1", 30, "", "o2"))
    assert err.value.extra["in_flight"] is True
    with pytest.raises(IdempotencyMismatch):
        run(store.claim_idempotency("s1", "k", "fp2", 30, "", "o3"))
    assert run(store.get_idempotency("s1", "k")) is None  # a marker is not a record
    run(store.commit("s1", 0, b"{}", {}, IdempotencyRecord("k", "fp1", b"resp", "", "o1")))
    rec = run(store.claim_idempotency("s1", "k", "fp1", 30))
    assert rec is not None and (rec.fingerprint, rec.response) == ("fp1", b"resp")
    with pytest.raises(NotFound):
        run(store.claim_idempotency("nope", "k", "fp1", 30))


def test_idempotency_release_frees_the_key(store: SessionStore) -> None:
    make(store)
    assert run(store.claim_idempotency("s1", "k", "fp1", 30, "", "o1")) is None
    run(store.release_idempotency("s1", "k", "other", "", "o1"))  # not ours: stays
    run(store.release_idempotency("s1", "k", "fp1", "", "o2"))  # another claim's: stays
    with pytest.raises(Conflict):
        run(store.claim_idempotency("s1", "k", "fp1", 30))
    run(store.release_idempotency("s1", "k", "fp1", "", "o1"))
    assert run(store.claim_idempotency("s1", "k", "fp1", 30)) is None


def test_a_dead_claim_frees_its_key_within_its_lease(store: SessionStore) -> None:
    """Issue #16 item 15: a claim is a lease its owner renews; once the owner is gone a
    retry claims the key, and the stale owner's commit is refused (never applied twice)."""
    make(store)
    assert run(store.claim_idempotency("s1", "k", "fp", 0.3, "", "dead")) is None
    assert run(store.renew_idempotency("s1", "k", "fp", 0.3, "", "dead"))
    assert not run(store.renew_idempotency("s1", "k", "fp", 0.3, "", "someone-else"))
    with pytest.raises(Conflict):
        run(store.claim_idempotency("s1", "k", "fp", 0.3, "", "retry"))
    time.sleep(0.5)  # the owner stopped renewing: its lease lapses
    assert run(store.claim_idempotency("s1", "k", "fp", 30, "", "retry")) is None
    stale = IdempotencyRecord("k", "fp", b"stale", "", "dead")
    with pytest.raises(ClaimLost):  # the key is the retry's now: the stale commit is refused
        run(store.commit("s1", 0, b"{}", {"param": np.ones(4, np.float32)}, stale))
    assert run(store.load("s1")).version == 0  # nothing of it was written
    assert not run(store.renew_idempotency("s1", "k", "fp", 30, "", "dead"))
    run(store.commit("s1", 0, b"{}", {}, IdempotencyRecord("k", "fp", b"ok", "", "retry")))
    with pytest.raises(ClaimLost):  # a record is there: a late commit is refused too
        run(store.commit("s1", 1, b"{}", {}, stale))
    assert run(store.load("s1")).version == 1
    assert run(store.claim_idempotency("s1", "k", "fp", 30)).response == b"ok"  # type: ignore[union-attr]
    # a lease that lapsed with nobody claiming since: its owner may still commit
    assert run(store.claim_idempotency("s1", "k2", "fp", 0.1, "", "slow")) is None
    time.sleep(0.3)
    run(store.commit("s1", 1, b"{}", {}, IdempotencyRecord("k2", "fp", b"late", "", "slow")))
    assert run(store.get_idempotency("s1", "k2")).response == b"late"  # type: ignore[union-attr]


def test_idempotency_keys_are_per_tenant(store: SessionStore) -> None:
    """Issue #16 item 6: tenant b's claim under a key tenant a used meets nothing of a's,
    and leaves nothing a would meet."""
    make(store)
    assert run(store.claim_idempotency("s1", "k", "fp-a", 30, "a", "oa")) is None
    run(store.commit("s1", 0, b"{}", {}, IdempotencyRecord("k", "fp-a", b"a's", "a", "oa")))
    assert run(store.claim_idempotency("s1", "k", "fp-b", 30, "b", "ob")) is None  # no 422
    assert run(store.get_idempotency("s1", "k", "b")) is None
    assert run(store.get_idempotency("s1", "k", "a")).response == b"a's"  # type: ignore[union-attr]
    assert run(store.claim_idempotency("s1", "k2", "fp-b", 30, "b", "ob2")) is None
    assert run(store.claim_idempotency("s1", "k2", "fp-a", 30, "a", "oa2")) is None  # no 409


def test_lock_is_exclusive_and_expires(store: SessionStore) -> None:
    make(store)
    assert run(store.try_lock("s1", "a", 10_000))
    assert not run(store.try_lock("s1", "b", 10_000))
    run(store.unlock("s1", "b"))  # not the holder: nothing happens
    assert not run(store.try_lock("s1", "b", 10_000))
    run(store.unlock("s1", "a"))
    assert run(store.try_lock("s1", "b", 1))
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
    assert run(store.barrier_get("s1", 0)) == {"w1": b"g1", "w2": b"g2"}
    with pytest.raises(Conflict) as exc:  # no round on a version the session is not at
        run(store.barrier_add("s1", 1, "w1", b"next", 60))
    assert exc.value.extra["current_version"] == 0
    got = run(store.load("s1", take=True))
    run(store.commit("s1", got.version, b"m", got.slots))  # the round on 0 closes
    with pytest.raises(Conflict) as exc:  # a late gradient never joins a closed round
        run(store.barrier_add("s1", 0, "w3", b"g3", 60))
    assert exc.value.extra["current_version"] == 1
    assert run(store.barrier_get("s1", 0)) == {"w1": b"g1", "w2": b"g2"}
    assert run(store.barrier_add("s1", 1, "w1", b"next", 60)) == (1, True)
    run(store.barrier_clear("s1", 0))
    assert run(store.barrier_get("s1", 0)) == {}
    assert run(store.barrier_get("s1", 1)) == {"w1": b"next"}
    assert run(store.delete("s1"))
    with pytest.raises(NotFound):
        run(store.barrier_add("s1", 1, "w2", b"g", 60))


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
