"""The SessionStore contract, run on the memory store and on a private redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from app.problems import Conflict, InvalidBody, NotFound
from app.store import IdempotencyRecord, MemoryStore, RedisStore, SessionStore
from tests.helpers import run

BAD_SIDS = ["", "a:b", "{x}", "x" * 65, "über", "a b", "../etc", "a*"]


def slots(n: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "param": rng.standard_normal(n).astype(np.float32),
        "exp_avg": rng.standard_normal(n),  # float64
    }


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a
    )


def session_keys(store: SessionStore, sid: str) -> list[str]:
    assert isinstance(store, RedisStore)

    async def scan() -> list[str]:
        return sorted([k.decode() async for k in store.client.scan_iter(f"optd:{{{sid}}}:*")])

    return run(scan())


def test_create_load_round_trip_is_exact(store: SessionStore) -> None:
    data = slots(1000)
    data["param"][:3] = [np.inf, -0.0, np.float32(1e-45)]
    expect = {k: v.copy() for k, v in data.items()}
    run(store.create("s1", b'{"a": 1}', data, {"team": "x"}))
    got = run(store.load("s1"))
    assert (got.version, got.meta) == (0, b'{"a": 1}')
    assert same(got.slots, expect)
    assert same(run(store.load("s1", ["exp_avg", "nope"])).slots, {"exp_avg": expect["exp_avg"]})
    with pytest.raises(Conflict):
        run(store.create("s1", b"{}", slots(), {}))


def test_big_endian_input_comes_back_native(store: SessionStore) -> None:
    run(store.create("be", b"{}", {"p": np.arange(5, dtype=">f8")}, {}))
    p = run(store.load("be")).slots["p"]
    assert p.dtype == np.float64 and p.dtype.isnative and p.tolist() == [0, 1, 2, 3, 4]


def test_commit_replaces_only_given_slots(store: SessionStore) -> None:
    run(store.create("s1", b"m0", slots(), {}))
    before = run(store.load("s1")).slots
    new_param = np.full(100, 7.0, np.float32)
    extra = np.arange(3, dtype=np.float32)
    v = run(store.commit("s1", 0, b"m1", {"param": new_param.copy(), "extra": extra.copy()}))
    assert v == 1
    got = run(store.load("s1"))
    assert (got.version, got.meta) == (1, b"m1")
    assert same(got.slots, {"param": new_param, "exp_avg": before["exp_avg"], "extra": extra})
    assert run(store.commit("s1", 1, b"m2", {})) == 2


def test_stale_commit_conflicts_and_changes_nothing(store: SessionStore) -> None:
    run(store.create("s1", b"m0", slots(), {}))
    run(store.commit("s1", 0, b"m1", {"param": np.zeros(100, np.float32)}))
    before = run(store.load("s1"))
    rec = IdempotencyRecord("k1", "fp", b"resp")
    with pytest.raises(Conflict) as err:
        run(store.commit("s1", 0, b"bad", {"param": np.ones(5, np.float32)}, rec, ttl_s=5))
    assert err.value.extra["current_version"] == 1
    after = run(store.load("s1"))
    assert (after.version, after.meta) == (1, b"m1") and same(after.slots, before.slots)
    assert run(store.get_idempotency("s1", "k1")) is None


def test_absent_and_malformed_sessions_are_not_found(store: SessionStore) -> None:
    for sid in ["absent", *BAD_SIDS]:
        with pytest.raises(NotFound):
            run(store.load(sid))
        with pytest.raises(NotFound):
            run(store.commit(sid, 0, b"", {}))
        assert run(store.delete(sid)) is False
        assert run(store.get_idempotency(sid, "k")) is None
        if sid != "absent":
            with pytest.raises(ValueError):  # new ids come from keys.new_sid(), never a user
                run(store.create(sid, b"", {}, {}))


def test_delete_removes_every_key(store: SessionStore, store_kind: str) -> None:
    run(store.create("gone", b"m", slots(), {"a": "b"}, ttl_s=100))
    run(store.commit("gone", 0, b"m", {"param": np.zeros(10, np.float32)}))
    other = slots(7)
    run(store.create("kept", b"m", other, {}))
    assert run(store.delete("gone")) is True
    assert run(store.delete("gone")) is False
    with pytest.raises(NotFound):
        run(store.load("gone"))
    assert [s.id for s in run(store.list(None, 10))[0]] == ["kept"]
    assert same(run(store.load("kept")).slots, other)
    if store_kind != "memory":
        assert session_keys(store, "gone") == []
        assert len(session_keys(store, "kept")) == 3  # meta + one chunk per slot


def test_chunking_and_shrinking(make_store: Callable[..., SessionStore], store_kind: str) -> None:
    store = make_store(chunk_bytes=1000)
    big = np.random.default_rng(1).standard_normal(20_001).astype(np.float32)  # > inline
    run(store.create("c", b"m", {"param": big.copy(), "tiny": np.zeros(1)}, {}))
    assert same(run(store.load("c")).slots, {"param": big, "tiny": np.zeros(1)})
    if store_kind != "memory":
        assert len(session_keys(store, "c")) == 1 + 81 + 1  # 80_004 bytes -> 81 chunks
    small = big[:600].copy()
    run(store.commit("c", 0, b"m", {"param": small.copy(), "empty": np.zeros(0, np.float32)}))
    fresh = make_store(chunk_bytes=1000) if store_kind != "memory" else store  # nothing cached
    got = run(fresh.load("c")).slots
    assert same(got, {"param": small, "tiny": np.zeros(1), "empty": np.zeros(0, np.float32)})
    if store_kind != "memory":
        assert len(session_keys(store, "c")) == 1 + 3 + 1  # 2400 bytes -> 3 chunks
        run(store.delete("c"))
        assert session_keys(store, "c") == []


def test_list_pages_each_session_once_in_order(store: SessionStore) -> None:
    sids = [f"sess{i:03d}{'xyz'[i % 3]}" for i in range(45)]
    for i, sid in enumerate(reversed(sids)):
        run(store.create(sid, f"m{i}".encode(), {}, {"team": "a" if i % 3 == 0 else "b"}))

    def collect(labels: dict[str, str] | None) -> list[str]:
        out: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            page, cursor = run(store.list(cursor, 10, labels))
            assert len(page) <= 10
            out += [s.id for s in page]
            if cursor is None:
                return out
        raise AssertionError("list did not end")

    assert collect(None) == sorted(sids)
    team_a = sorted(sid for i, sid in enumerate(reversed(sids)) if i % 3 == 0)
    assert collect({"team": "a"}) == team_a
    assert collect({"team": "nobody"}) == []
    first, _ = run(store.list(None, 1))
    assert first[0].id == sorted(sids)[0] and first[0].version == 0
    with pytest.raises(InvalidBody):
        run(store.list("not-a-cursor!", 10))


def test_idempotency_record_is_stored_with_the_commit(store: SessionStore) -> None:
    run(store.create("s1", b"m", slots(), {}))
    rec = IdempotencyRecord("key-ü/1", "sha256:abc", b"\x00\xffresponse\n")
    run(store.commit("s1", 0, b"m1", {}, rec))
    assert run(store.get_idempotency("s1", "key-ü/1")) == rec
    assert run(store.get_idempotency("s1", "other")) is None
    assert run(store.get_idempotency("absent", "key-ü/1")) is None
    run(store.delete("s1"))
    assert run(store.get_idempotency("s1", "key-ü/1")) is None


def test_loaded_arrays_belong_to_the_caller(store: SessionStore) -> None:
    data = slots()
    expect = {k: v.copy() for k, v in data.items()}
    run(store.create("s1", b"m", data, {}))
    for _ in range(2):  # the second load is a cache hit on Redis
        got = run(store.load("s1")).slots
        for arr in got.values():
            assert arr.flags.writeable
            arr += 1
        assert same(run(store.load("s1")).slots, expect)
    run(store.commit("s1", 0, b"m", {"param": expect["param"].copy()}))
    got = run(store.load("s1")).slots
    got["param"][:] = 0
    assert same(run(store.load("s1")).slots, expect)


def test_concurrent_commits_exactly_one_wins(
    make_store: Callable[..., SessionStore], store_kind: str
) -> None:
    first = make_store()
    stores = [first, make_store() if store_kind != "memory" else first]  # two "processes"
    run(stores[0].create("hot", b"m", slots(), {}))

    async def race() -> list[int | BaseException]:
        return await asyncio.gather(
            *(
                stores[i % 2].commit("hot", 0, f"w{i}".encode(), {"param": np.full(100, i, "f4")})
                for i in range(20)
            ),
            return_exceptions=True,
        )

    results = run(race())
    assert results.count(1) == 1
    losers = [r for r in results if r != 1]
    assert all(isinstance(r, Conflict) and r.extra["current_version"] == 1 for r in losers)
    winner = results.index(1)
    got = run(stores[1].load("hot"))
    assert got.meta == f"w{winner}".encode() and got.slots["param"][0] == winner
    if store_kind != "memory":  # the losers' chunks are gone: meta + one chunk per slot
        assert len(session_keys(first, "hot")) == 3


def test_ttl_applies_to_every_key(store: SessionStore, store_kind: str) -> None:
    run(store.create("t", b"m", slots(), {}, ttl_s=50))
    run(store.commit("t", 0, b"m", {"new": np.zeros(3, np.float32)}))  # keeps the TTL
    if store_kind != "memory":
        assert isinstance(store, RedisStore)
        ks = session_keys(store, "t")
        ttls = [run(store.client.ttl(k)) for k in ks]
        assert len(ks) == 4 and all(0 < t <= 50 for t in ttls)
        run(store.commit("t", 1, b"m", {}, ttl_s=500))
        assert all(400 < run(store.client.ttl(k)) <= 500 for k in ks)
    else:
        assert isinstance(store, MemoryStore)
        now = store.clock()
        store.clock = lambda: now + 51
        with pytest.raises(NotFound):
            run(store.load("t"))
        assert run(store.list(None, 10)) == ([], None)
