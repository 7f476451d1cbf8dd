"""What only the Redis store has: the version-checked cache, the sharded index, survival of
a Redis crash, and Redis Cluster (a one-node cluster: same slot rules as a real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from app.problems import Conflict, NotFound, StoreUnavailable
from app.store import IdempotencyRecord, RedisStore
from app.store import keys as K
from app.store.slotcache import pack
from tests.helpers import run
from tests.redisproc import RedisProc


@pytest.fixture
def rstores(redis_proc: RedisProc) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two stores on the same Redis: two API processes, each with its own cache."""
    a, b = RedisStore.connect(redis_proc.url), RedisStore.connect(redis_proc.url)
    run(a.client.flushall())
    yield a, b
    run(a.close())
    run(b.close())


def vec(x: float, n: int = 50) -> np.ndarray:
    return np.full(n, x, np.float32)


def test_cache_is_version_checked_across_processes(rstores: tuple[RedisStore, RedisStore]) -> None:
    a, b = rstores
    run(a.create("s", b"m0", {"param": vec(0), "m": vec(0)}, {}))
    assert run(b.load("s")).slots["param"][0] == 0  # B caches version 0
    assert b.stats["slot_reads"] == 2

    run(a.commit("s", 0, b"m1", {"param": vec(1)}))
    got = run(b.load("s"))  # B's cache is stale: the script sends every slot
    assert (got.version, got.meta, got.slots["param"][0]) == (1, b"m1", 1)
    assert b.stats["slot_reads"] == 4

    reads = a.stats["slot_reads"]
    got = run(a.load("s"))  # A committed version 1 itself: only the meta comes back
    assert (got.version, got.slots["param"][0], got.slots["m"][0]) == (1, 1, 0)
    assert a.stats["slot_reads"] == reads and a.stats["cache_hits"] == 1

    run(b.commit("s", 1, b"m2", {"m": vec(2)}))
    got = run(a.load("s", ["m"]))  # only the slot that A lacks at version 2 is read
    assert (got.version, got.slots["m"][0]) == (2, 2) and a.stats["slot_reads"] == reads + 1
    run(a.load("s"))  # "param" at version 2 is new to A
    assert a.stats["slot_reads"] == reads + 2
    run(a.load("s"))
    assert a.stats["slot_reads"] == reads + 2


def test_recreated_session_is_not_served_from_cache(
    rstores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = rstores
    run(a.create("s", b"m", {"param": vec(1)}, {}))
    run(a.load("s"))
    run(b.delete("s"))
    run(b.create("s", b"m", {"param": vec(2)}, {}))  # version 0 again, other incarnation
    assert run(a.load("s")).slots["param"][0] == 2


def test_cache_is_bounded(redis_proc: RedisProc) -> None:
    store = RedisStore.connect(redis_proc.url, cache_bytes=1000)
    try:
        run(store.create("big", b"m", {"p": vec(0, 1000)}, {}))  # 4000 bytes: not cached
        run(store.create("s1", b"m", {"p": vec(0, 100)}, {}))
        run(store.create("s2", b"m", {"p": vec(0, 100)}, {}))
        run(store.create("s3", b"m", {"p": vec(0, 100)}, {}))  # 1200 bytes: s1 evicted
        for sid, fetched in [("s3", 0), ("s2", 0), ("big", 1), ("s1", 1)]:
            before = store.stats["slot_reads"]
            run(store.load(sid))
            assert store.stats["slot_reads"] - before == fetched, sid
    finally:
        run(store.close())


def test_list_skips_and_prunes_index_entries_without_a_session(
    rstores: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = rstores
    run(a.create("alive", b"m", {}, {}))
    index = K.index_key(K.index_shard("ghost"))
    run(a.client.zadd(index, {"ghost": 0}))
    assert [s.id for s in run(a.list(None, 10))[0]] == ["alive"]
    assert run(a.client.zscore(index, "ghost")) is None
    shards = {K.index_shard(f"s{i}") for i in range(100)}
    assert len(shards) == K.INDEX_SHARDS  # sessions spread over every shard


def test_crash_gives_503_and_the_store_recovers_after_restart() -> None:
    with RedisProc() as proc:
        store = RedisStore.connect(proc.url)
        try:
            run(store.ping())
            run(store.create("s", b"m", {"p": vec(1)}, {}))
            proc.kill()
            for op in [
                store.ping(),
                store.load("s"),
                store.commit("s", 0, b"m", {"p": vec(2)}),
                store.create("t", b"m", {}, {}),
                store.delete("s"),
                store.list(None, 10),
                store.get_idempotency("s", "k"),
            ]:
                with pytest.raises(StoreUnavailable) as err:
                    run(op)
                assert "OPTD_REDIS_URL" in err.value.detail
                assert err.value.headers["Retry-After"] == "1"
            proc.restart()  # no persistence: the data is gone, the same client reconnects
            run(store.ping())
            with pytest.raises(NotFound):  # the cached copy of "s" is not served
                run(store.load("s"))
            run(store.create("s", b"m2", {"p": vec(3)}, {}))
            assert run(store.load("s")).slots["p"][0] == 3
        finally:
            run(store.close())


def test_ping_names_the_url_when_nothing_listens() -> None:
    from tests.redisproc import free_port

    store = RedisStore.connect(f"redis://:secret@127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable) as err:
            run(store.ping())
        assert "redis-server running at redis://127.0.0.1:" in err.value.detail
        assert "secret" not in err.value.detail
    finally:
        run(store.close())


def test_redis_cluster_end_to_end() -> None:
    with RedisProc(cluster=True) as proc:
        store = RedisStore.connect(proc.url, cluster=True, chunk_bytes=100)
        other = RedisStore.connect(proc.url, cluster=True, chunk_bytes=100)
        try:
            run(store.ping())
            for i in range(12):
                run(store.create(f"c{i:02d}", b"m", {"p": vec(i, 60)}, {"i": str(i % 2)}))
            rec = IdempotencyRecord("k", "fp", b"r")
            assert run(store.commit("c01", 0, b"m1", {"p": vec(9, 10)}, rec, ttl_s=60)) == 1
            with pytest.raises(Conflict):
                run(other.commit("c01", 0, b"m1", {}))
            got = run(other.load("c01"))
            assert (got.version, got.slots["p"].tolist()) == (1, [9.0] * 10)
            assert run(other.get_idempotency("c01", "k")) == rec
            page, cursor = run(other.list(None, 5, {"i": "1"}))
            assert [s.id for s in page] == ["c01", "c03", "c05", "c07", "c09"] and cursor
            page, cursor = run(other.list(cursor, 5, {"i": "1"}))
            assert [s.id for s in page] == ["c11"] and cursor is None
            assert run(store.delete("c01")) is True
            with pytest.raises(NotFound):
                run(other.load("c01"))
        finally:
            run(store.close())
            run(other.close())


def all_ttls(store: RedisStore, sid: str) -> dict[str, int]:
    async def scan() -> dict[str, int]:
        found = [k async for k in store.client.scan_iter(f"optd:{{{sid}}}:*")]
        return {k.decode(): await store.client.ttl(k) for k in found}

    return run(scan())


def test_commit_replaces_chunk_keys_and_leaves_no_orphans(
    rstores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = rstores
    run(a.create("s", b"m", {"p": vec(0), "q": vec(0)}, {}))
    for i in range(3):
        run((a, b)[i % 2].commit("s", i, b"m", {"p": vec(i + 1)}))
    with pytest.raises(Conflict):
        run(b.commit("s", 0, b"m", {"p": vec(9), "new": vec(9)}))
    ttls = all_ttls(a, "s")
    assert len(ttls) == 3 and set(ttls.values()) == {-1}  # meta + p + q, no pending TTL left
    assert run(b.load("s")).slots["p"][0] == 3


@pytest.mark.parametrize("inline", [True, False], ids=["evalsha", "multi"])
def test_a_retried_write_is_recognised_not_applied_twice(
    rstores: tuple[RedisStore, RedisStore], inline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py re-sends a write whose reply was lost; replay one by hand, twice over
    (small writes are one EVALSHA, big ones MULTI + SETs + EVAL: both kinds)."""
    if not inline:
        monkeypatch.setattr("app.store.redis_conn.INLINE_BYTES", 0)
    a, b = rstores
    token = K.new_token()
    _, layout, chunks = pack("s", {"p": vec(1)}, token, a.chunk_bytes)
    args = [0, b"m", "{}", json.dumps(layout), 0, "inc0", token]
    mkey = K.meta_key("s")
    assert run(a._write("create", chunks, [mkey, *chunks], args)) == 1
    assert run(a._write("create", chunks, [mkey, *chunks], args)) == 1  # the retry
    token = K.new_token()
    _, layout, chunks = pack("s", {"p": vec(2)}, token, a.chunk_bytes)
    args2 = [0, 0, b"", 60, b"m1", token, json.dumps(layout), "", ""]
    first = run(a._write("commit", chunks, [mkey, *chunks], args2, inline=True))
    again = run(a._write("commit", chunks, [mkey, *chunks], args2, inline=True))
    assert first[:2] == again[:2] == [1, 1]
    ttls = all_ttls(a, "s")
    assert len(ttls) == 2 and set(ttls.values()) == {-1}
    got = run(b.load("s"))
    assert got.version == 1 and got.slots["p"][0] == 2


def test_big_slots_are_read_consistently_while_commits_race(
    rstores: tuple[RedisStore, RedisStore],
) -> None:
    """Big slots are read in a second round trip; a commit in between makes it read again."""
    a, b = rstores
    n = 200_000  # 800 KB: above the inline limit
    run(a.create("s", b"m0", {"p": vec(0, n), "q": vec(0, n)}, {}))
    real = b._get_chunks
    calls = 0

    async def racing(sid: str, slots: list[tuple[str, list[object]]]) -> list[object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await a.commit("s", 0, b"m1", {"p": vec(1, n), "q": vec(1, n)})
        return await real(sid, slots)

    b._get_chunks = racing  # type: ignore[method-assign]
    got = run(b.load("s"))
    assert calls == 2 and got.version == 1 and got.meta == b"m1"
    assert got.slots["p"][0] == got.slots["q"][-1] == 1
