"""The two faults, each measured as seconds from the fault to the first acknowledged retry
of a keyed step (the same Idempotency-Key, through a surviving API process).

api_kill: a step is in flight on API process A when A is killed with SIGKILL. To be sure
it is in flight (not before its claim, not after its commit), the benchmark holds the
session's advisory lock while the step runs, so the step claims its key and then waits;
the lock is let go right at the kill. The retry goes to API process B every 20 ms.

master_kill: one client thread per session steps in a closed loop (so many requests are
in flight when the fault hits) with a new key after each acknowledgement, retrying the
same key (alternating API processes, every 50 ms) after
anything else; the master of the first session's shard is killed with SIGKILL while they
run, and one of its replicas takes over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis

from app.store import keys
from bench.common import harness as h
from bench.faults.cluster import Cluster

STEP = json.dumps({"grads": {"x": [1.0]}}).encode()
CREATE = json.dumps({"params": {"x": [0.0]}, "optimizer": "sgd"}).encode()


def _create(port: int) -> str:
    status, _, body = h.Http(port, 30).request(
        "POST", "/v1/sessions", CREATE, {"content-type": "application/json"}
    )
    if status != 201:
        raise RuntimeError(f"create failed: {status} {body[:200]!r}")
    return str(json.loads(body)["id"])


def _step(http: h.Http, sid: str, key: str) -> int:
    headers = {
        "content-type": "application/json",
        "idempotency-key": key,
        "prefer": "return=minimal",
    }
    try:
        http.fresh()  # uvicorn drops idle keep-alive connections: reconnect first
        return http.request("POST", f"/v1/sessions/{sid}/step", STEP, headers)[0]
    except (OSError, ValueError, h.http.client.HTTPException):
        http.close()  # http.client reconnects on the next request
        return 0


def api_kill(trials: int) -> list[float]:
    redis_proc = h.start_redis()
    procs = [redis_proc]
    try:
        h.wait_redis(redis_proc)
        url = f"redis://{h.HOST}:{redis_proc.port}/0"
        survivor = h.start_optd("faults-survivor", url)
        procs.append(survivor)
        h.wait_http(survivor)
        r = redis.Redis(host=h.HOST, port=redis_proc.port)
        out = []
        for i in range(trials):
            victim = h.start_optd(f"faults-victim{i}", url)
            procs.append(victim)
            h.wait_http(victim)
            sid, key = _create(survivor.port), f"k{i}"
            r.set(keys.lock_key(sid), b"bench", px=60_000)
            doomed = threading.Thread(target=_step, args=(h.Http(victim.port, 60), sid, key))
            doomed.start()
            deadline = time.monotonic() + 30
            while not (r.get(keys.idem_key(sid, key)) or b"").startswith(keys.INFLIGHT):
                if time.monotonic() > deadline:
                    raise RuntimeError("the victim's step never claimed its key")
                time.sleep(0.01)
            time.sleep(0.5)  # well inside the request
            os.killpg(victim.proc.pid, signal.SIGKILL)
            t0 = time.monotonic()
            r.delete(keys.lock_key(sid))
            http = h.Http(survivor.port, 30)
            while _step(http, sid, key) != 204:
                if time.monotonic() - t0 > 120:
                    raise RuntimeError("no acknowledged retry within 120 s")
                time.sleep(0.02)
            out.append(time.monotonic() - t0)
            doomed.join(30)
            victim.stop()
            print(f"  api_kill trial {i + 1}/{trials}: {out[-1]:.2f} s", flush=True)
        r.close()
        return out
    finally:
        for p in reversed(procs):
            p.stop()


@dataclass
class Failover:
    sessions: int
    affected: int  # sessions on the killed master's shard
    failover_s: float  # kill -> the replica serves (cluster_state:ok, victim not a master)
    from_kill: dict[str, float] = field(default_factory=dict)  # sid -> first ack after kill
    on_victim: set[str] = field(default_factory=set)
    codes: dict[int, int] = field(default_factory=dict)  # status -> count of retried answers

    def after_failover(self, sids: set[str]) -> list[float]:
        return sorted(max(self.from_kill[s] - self.failover_s, 0.0) for s in sids)


def master_kill(sessions: int, node_timeout_ms: int, warm_s: float) -> Failover:
    cluster = Cluster(node_timeout_ms)
    procs: list[h.Proc] = []
    stop = threading.Event()
    try:
        cluster.start()
        env = {"OPTD_REDIS_CLUSTER": "1", "OPTD_REDIS_WAIT_REPLICAS": "1"}
        procs = [h.start_optd(f"faults-api{i}", cluster.url, env) for i in range(2)]
        for p in procs:
            h.wait_http(p)
        sids = [_create(procs[i % 2].port) for i in range(sessions)]
        rc = redis.RedisCluster.from_url(cluster.url)
        owner = {s: int(rc.get_node_from_key(keys.meta_key(s)).port) for s in sids}
        rc.close()
        victim = next(n for n in cluster.nodes if n.port == owner[sids[0]])
        acks: dict[str, list[float]] = {s: [] for s in sids}
        seen: dict[int, int] = {}  # answers other than 204 (0: a transport error)
        lock = threading.Lock()

        def worker(sid: str, i: int) -> None:
            https = [h.Http(p.port, 30) for p in procs]
            while not stop.is_set():
                key, attempt = str(uuid.uuid4()), i
                while not stop.is_set():
                    code = _step(https[attempt % 2], sid, key)
                    if code == 204:
                        break
                    with lock:
                        seen[code] = seen.get(code, 0) + 1
                    attempt += 1
                    time.sleep(0.05)
                with lock:
                    acks[sid].append(time.monotonic())

        threads = [threading.Thread(target=worker, args=(s, i)) for i, s in enumerate(sids)]
        for t in threads:
            t.start()
        time.sleep(warm_s)
        os.killpg(victim.proc.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        while True:  # a replica was promoted: three masters again, none of them the victim
            masters = cluster.masters()
            if victim.port not in masters and len(masters) == 3 and cluster.state_ok():
                break
            if time.monotonic() - t_kill > 120:
                raise RuntimeError("no failover within 120 s")
            time.sleep(0.05)
        result = Failover(sessions, 0, time.monotonic() - t_kill)
        result.on_victim = {s for s in sids if owner[s] == victim.port}
        result.affected = len(result.on_victim)
        deadline = t_kill + result.failover_s + 60
        while time.monotonic() < deadline:
            with lock:
                done = all(any(t > t_kill for t in a) for a in acks.values())
            if done:
                break
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(60)
        result.codes = seen
        for s, a in acks.items():
            after = [t for t in a if t > t_kill]
            result.from_kill[s] = (after[0] - t_kill) if after else float("inf")
        return result
    finally:
        stop.set()
        for p in reversed(procs):
            p.stop()
        with contextlib.suppress(Exception):
            cluster.stop()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
