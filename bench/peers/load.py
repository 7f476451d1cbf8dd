"""Many small sessions at once for bench/peers/run.py: a closed loop of client threads, one
session each, as bench/service/run.py's, over systems that are not all HTTP (Ray)."""

from __future__ import annotations

import os
import threading
import time

from redis import Redis

from bench.common import harness as h
from bench.common import report as rep
from bench.peers import cells as pc
from bench.peers import procs as pp
from bench.peers import results as res
from bench.peers.systems import System

Run = tuple[int, float, list[float], dict[str, float]]  # steps, seconds, latencies, CPU


def closed_loop(sessions: list[pc.Session], seconds: float, pids: dict[str, list[int]]) -> Run:
    """Every session's own thread steps it until the deadline; wall time from the common start
    to the last response; CPU seconds by process group (and `client`, this process)."""
    n = len(sessions)
    barrier = threading.Barrier(n + 1)
    start = [0.0]
    counts, finish = [0] * n, [0.0] * n
    lats: list[list[float]] = [[] for _ in range(n)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        deadline = start[0] + seconds
        try:
            while time.perf_counter() < deadline:
                lats[i].append(sessions[i].step())
                counts[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finish[i] = time.perf_counter()

    def cpu() -> dict[str, float]:
        t = os.times()
        out = {"client": t.user + t.system}
        for group, ps in pids.items():
            out[group] = sum(h.cpu_seconds(p) for p in ps)
        return out

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    c0 = cpu()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(seconds + 120)
    c1 = cpu()
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"closed loop failed: {errors[:1]!r}")
    used = {k: c1[k] - c0[k] for k in c0}
    return sum(counts), max(finish) - start[0], [x for xs in lats for x in xs], used


def _commands(r: Redis) -> dict[str, int]:
    """Calls per Redis command so far (INFO commandstats; the INFO itself is not counted)."""
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _open(s: System, clients: int, problem: pc.Problem) -> list[pc.Session]:
    if s.key == "optd/redis/binary/2p":  # client i keeps to process i mod 2
        ports = [p.port for p in s.procs]
        return [pc.OptdSession(s.key, [ports[i % 2]], "binary", problem) for i in range(clients)]
    return [s.opener(problem) for _ in range(clients)]


def run_concurrency(
    systems: list[System],
    procs: dict[str, h.Proc],
    clients: int,
    seconds: float,
    rounds: int,
    progress: rep.Progress,
) -> list[res.ConcCell]:
    problem = pc.Problem(1_000, 1, seed=2)
    ours = {p.proc.pid for p in procs.values()}
    redis = [procs["redis"].proc.pid]
    pools: dict[str, list[pc.Session]] = {}
    pids: dict[str, dict[str, list[int]]] = {}
    rc = Redis(host=h.HOST, port=procs["redis"].port, socket_timeout=30)
    try:
        for s in systems:
            pools[s.key] = _open(s, clients, problem)
            for x in pools[s.key]:
                x.first(problem)
            server = [p.proc.pid for p in s.procs]
            if s.kind == "ray":  # every Ray process: the actors, raylet, GCS, agents
                server = [p for p in pp.descendants(os.getpid()) if p not in ours]
            pids[s.key] = {"server": server, "redis": redis}
        for s in systems:  # warm-up: a short closed loop each
            closed_loop(pools[s.key], min(0.5, seconds), pids[s.key])
        runs: dict[str, list[Run]] = {s.key: [] for s in systems}
        calls: dict[str, dict[str, int]] = {s.key: {} for s in systems}
        for r in range(rounds):
            k = r % len(systems)
            for s in systems[k:] + systems[:k]:
                c0 = _commands(rc)
                runs[s.key].append(closed_loop(pools[s.key], seconds, pids[s.key]))
                for cmd, n in _commands(rc).items():
                    if cmd != "info" and n > c0.get(cmd, 0):
                        calls[s.key][cmd] = calls[s.key].get(cmd, 0) + n - c0.get(cmd, 0)
        out = []
        for s in systems:
            rs = runs[s.key]
            cpu = {w: sum(x[3][w] for x in rs) for w in ("server", "redis", "client")}
            lats = [v for x in rs for v in x[2]]
            c = res.ConcCell(
                s.key, clients, sum(x[0] for x in rs), sum(x[1] for x in rs), lats, cpu
            )
            c.redis_calls = {k: v / max(c.steps, 1) for k, v in calls[s.key].items()}
            out.append(c)
            progress.cell(
                f"{clients} clients x 1e3 {s.label}: {c.rate:.0f} steps/s (p50 {c.pct(50):.2f} ms)"
            )
        return out
    finally:
        rc.close()
        for pool in pools.values():
            for x in pool:
                x.close()
