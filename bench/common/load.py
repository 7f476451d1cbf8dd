"""Closed-loop load from many workers, for bench/workers/run.py and bench/cluster/run.py.

A worker is a client thread with its own keep-alive connection (`harness.Http`) to one API
process, stepping one session with a binary (safetensors) gradient built once, sending
`Optd-Worker` and `Optd-Base-Version` (the version its last response named) as a parameter
server's worker would. Threads release the GIL while they wait on sockets, and the client's
own CPU is measured, so a report can say whether the client or the servers were the limit.

Sync mode needs all of a session's workers to stop on the same round, else the last ones
wait for a round nobody completes: when the time (or step budget) is up, the first worker to
notice fixes the session's last version as the one after the version it holds, and every
worker stops once its response reaches that version.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bench.common import harness as h
from bench.common.slots import BIN_HEADERS, CONFIG

MAX_ERRORS = 200  # a worker that gets this many non-200 answers stops (bounded loops)


def gradient_body(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    grad = (rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)).astype(np.float32)
    return st_save({"w": grad})


def create_session(port: int, n: int, *, sync_workers: int | None = None, seed: int = 1) -> str:
    """Adam on one float32 tensor `w` of n parameters; sync mode when `sync_workers` is set."""
    config: dict[str, object] = dict(CONFIG)
    if sync_workers is not None:
        config |= {"mode": "sync", "workers": sync_workers}
    init = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    body = st_save({"w": init}, metadata={"config": orjson.dumps(config).decode()})
    conn = h.Http(port)
    try:
        status, _, data = conn.request(
            "POST", "/v1/sessions", body, {"content-type": "application/x-safetensors"}
        )
    finally:
        conn.close()
    if status != 201:
        raise RuntimeError(f"create on :{port} answered {status}: {data[:300]!r}")
    return str(orjson.loads(data)["id"])


def session_version(conn: h.Http, sid: str) -> int:
    conn.fresh()
    status, _, data = conn.request("GET", f"/v1/sessions/{sid}")
    if status != 200:
        raise RuntimeError(f"GET session {sid} answered {status}: {data[:300]!r}")
    return int(orjson.loads(data)["version"])


def delete_sessions(port: int, sids: Sequence[str]) -> None:
    """Best effort (runs in finally blocks): free Redis and the API processes' caches."""
    conn = h.Http(port, timeout=60.0)
    try:
        for sid in sids:
            conn.fresh()
            conn.request("DELETE", f"/v1/sessions/{sid}")
    except (OSError, http.client.HTTPException) as exc:
        print(f"warning: deleting sessions failed: {exc!r}")
    finally:
        conn.close()


@dataclass(frozen=True)
class Lane:
    """One worker: which API process it talks to, which session, under which worker id."""

    port: int
    sid: str
    worker: str


@dataclass
class Load:
    steps: int  # applied steps: the sessions' version deltas (a sync round is one step)
    requests: int  # answered 200
    seconds: float  # common start to the last worker's end
    lats: list[float]  # seconds, client-side, per 200 answer
    errors: dict[str, int] = field(default_factory=dict)  # status (or exception) -> count
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group
    samples: dict[str, str] = field(default_factory=dict)  # status -> first body seen

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    def cpu_ms(self, group: str) -> float:
        """CPU milliseconds of a process group per applied step."""
        return 1000 * self.cpu.get(group, float("nan")) / self.steps if self.steps else float("nan")

    def cores(self, group: str) -> float:
        return self.cpu.get(group, float("nan")) / self.seconds if self.seconds else float("nan")


def _cpu(groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    t = os.times()
    out = {"client": t.user + t.system}
    for name, pids in groups.items():
        out[name] = sum(h.cpu_seconds(p) for p in pids)
    return out


class _Shared:
    def __init__(self, sids: set[str], max_steps: int) -> None:
        self.lock = threading.Lock()
        self.stop_at: dict[str, int | None] = dict.fromkeys(sids)
        self.max_steps = max_steps
        self.deadline = float("inf")  # set by the main thread before the workers start

    def last_version(self, sid: str, version: int, done: int) -> int | None:
        """The version a sync session ends on, fixed by the first worker past the budget."""
        with self.lock:
            if self.stop_at[sid] is None and (
                time.perf_counter() >= self.deadline or done >= self.max_steps
            ):
                self.stop_at[sid] = version + 1
            return self.stop_at[sid]


def closed_loop(
    lanes: Sequence[Lane],
    body: bytes,
    *,
    sync: bool,
    seconds: float,
    max_steps: int,
    wait_s: float = 30.0,
    pids: Mapping[str, Sequence[int]] | None = None,
    check: int | None = None,
) -> Load:
    """Every lane's thread steps its session until `seconds` are up or it made `max_steps`
    steps (sync: until its session reaches the agreed last round). `pids` name the
    processes whose CPU is measured over the same window; `check` = n asserts that the
    first answer holds n parameters."""
    conns = [h.Http(lane.port) for lane in lanes]
    start_version = {}
    for lane, conn in zip(lanes, conns, strict=True):
        if lane.sid not in start_version:
            start_version[lane.sid] = session_version(conn, lane.sid)
        conn.fresh()
    shared = _Shared(set(start_version), max_steps)
    barrier = threading.Barrier(len(lanes) + 1)
    lats: list[list[float]] = [[] for _ in lanes]
    errors: list[Counter[str]] = [Counter() for _ in lanes]
    samples: dict[str, str] = {}
    finish = [0.0] * len(lanes)
    path_q = f"?wait={wait_s:g}" if sync else ""

    def run(i: int) -> None:
        lane, conn = lanes[i], conns[i]
        path = f"/v1/sessions/{lane.sid}/step{path_q}"
        version, done, attempts = start_version[lane.sid], 0, 0
        barrier.wait()
        try:
            while attempts < max_steps + MAX_ERRORS:
                if not sync and (done >= max_steps or time.perf_counter() >= shared.deadline):
                    break
                attempts += 1
                headers = {**BIN_HEADERS, "optd-worker": lane.worker,
                           "optd-base-version": str(version)}  # fmt: skip
                t0 = time.perf_counter()
                status, resp_headers, data = conn.request("POST", path, body, headers)
                dt = time.perf_counter() - t0
                if status == 200:
                    version = int(resp_headers["optd-version"])
                    lats[i].append(dt)
                    done += 1
                    if check is not None and done == 1 and i == 0:
                        shape = st_load(data)["w"].shape
                        if shape != (check,):
                            raise RuntimeError(f"step answered params of shape {shape}")
                else:
                    errors[i][str(status)] += 1
                    samples.setdefault(str(status), data[:400].decode(errors="replace"))
                    if sum(errors[i].values()) >= MAX_ERRORS:
                        break
                    version = session_version(conn, lane.sid)  # e.g. after a sync 202
                if sync:
                    last = shared.last_version(lane.sid, version, done)
                    if last is not None and version >= last:
                        break
        except (OSError, http.client.HTTPException, RuntimeError, KeyError) as exc:
            errors[i][type(exc).__name__] += 1
            samples.setdefault(type(exc).__name__, repr(exc)[:400])
            print(f"warning: worker {lane.worker} on :{lane.port} stopped: {exc!r}")
        finish[i] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(lanes))]
    for t in threads:
        t.start()
    cpu0 = _cpu(pids or {})
    t_start = time.perf_counter()
    shared.deadline = t_start + seconds
    barrier.wait()
    for t in threads:
        t.join(seconds + wait_s + 300)
    cpu1 = _cpu(pids or {})
    if any(t.is_alive() for t in threads):
        raise RuntimeError("a worker thread did not finish (server stuck?)")
    wall = max(finish) - t_start
    steps = 0
    for sid, v0 in start_version.items():
        conn = conns[next(i for i, lane in enumerate(lanes) if lane.sid == sid)]
        steps += session_version(conn, sid) - v0
    for conn in conns:
        conn.close()
    total_errors: Counter[str] = Counter()
    for e in errors:
        total_errors.update(e)
    return Load(
        steps=steps,
        requests=sum(len(x) for x in lats),
        seconds=wall,
        lats=[x for xs in lats for x in xs],
        errors=dict(total_errors),
        cpu={k: cpu1[k] - cpu0[k] for k in cpu0},
        samples=samples,
    )


def merge(loads: Sequence[Load]) -> Load:
    """Rounds of one cell as one: steps and seconds add up, latencies pool."""
    errors: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for x in loads:
        errors.update(x.errors)
        cpu.update(x.cpu)
        samples = {**x.samples, **samples}
    return Load(
        steps=sum(x.steps for x in loads),
        requests=sum(x.requests for x in loads),
        seconds=sum(x.seconds for x in loads),
        lats=[v for x in loads for v in x.lats],
        errors=dict(errors),
        cpu=dict(cpu),
        samples=samples,
    )


def counters_delta(
    before: Sequence[Mapping[str, float]], after: Sequence[Mapping[str, float]], name: str
) -> float:
    """A counter's growth summed over API processes (scrapes in the same order)."""
    return sum(a.get(name, 0.0) - b.get(name, 0.0) for b, a in zip(before, after, strict=True))
