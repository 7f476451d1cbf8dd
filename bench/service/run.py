"""Step latency and throughput of the running service, against floors measured in the same run.

Run: `python -m bench.service` (full: 1e3..1e7 parameters, 32 concurrent clients; a few
minutes; writes the `## Service` section of bench/RESULTS.md) or `python -m bench.service
--quick` (1e3 and 1e5, 8 clients, well under 60 s; prints only, unless --write).

What runs: a private `redis-server` (no persistence) on a free port; four `optd serve`
processes (Redis store and memory store, one per wire format, so each process's Prometheus
phase histogram belongs to one cell); and two floor servers from bench/common/floors.py - a bare
FastAPI echo, and the echo plus one pipelined Redis GET+SET of the session's three state
arrays. One float32 tensor per session, Adam, the same gradient every step.

How it times: stdlib http.client with keep-alive, bodies built once per size; within a size
the systems take turns, one step each per repeat, in an order rotated every repeat, so drift
in the machine hits them all alike; each is warmed up first. Latencies are client-side wall
time per request (send the body, read the whole response). The server-side split comes from
`optd_step_phase_seconds{phase}`: mean per phase from the _sum/_count deltas of /metrics
scraped after warm-up and after the timed steps. Throughput: N client threads, each stepping
its own small session in a closed loop for a fixed time; systems alternate per round.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

from bench.common import harness as h
from bench.common import metrics as mt
from bench.common import report as rep
from bench.common.slots import Slot, Target, make_bodies
from bench.service import report as srep
from bench.service.goals import goals

# (parameters, repeats, warm-up steps); quick repeats are separate
FULL = [(1_000, 200, 5), (100_000, 50, 5), (1_000_000, 20, 3), (10_000_000, 5, 2)]
QUICK = [(1_000, 30, 3), (100_000, 8, 2)]
JSON_MAX = 1_000_000  # JSON above is skipped: ~1.5 s and 130 MB of text a step at 1e7
SMALL = 1_000


def run_size(
    n: int, repeats: int, warmup: int, targets: list[Target], progress: rep.Progress
) -> list[srep.Cell]:
    _, binary, js = make_bodies(n)
    slots = [Slot(t, n, binary, js, f"lat{n}") for t in targets]
    try:
        resp_bytes: dict[str, int] = {}
        for s in slots:
            for i in range(warmup):
                _, data = s.step()
                if i == 0:
                    s.check(data)
                resp_bytes[s.target.key] = len(data)
        before = {s.target.key: mt.scrape_phases(s.target.proc.port) for s in slots
                  if s.target.kind == "optd"}  # fmt: skip
        times: dict[str, list[float]] = {s.target.key: [] for s in slots}
        gc.collect()
        gc.disable()
        try:
            for r in range(repeats):
                k = r % len(slots)
                for s in slots[k:] + slots[:k]:
                    times[s.target.key].append(s.step()[0])
        finally:
            gc.enable()
        cells = []
        for s in slots:
            t = s.target
            phases = {}
            if t.key in before:
                phases = mt.phase_means_ms(before[t.key], mt.scrape_phases(t.proc.port))
            xs = times[t.key]
            cell = srep.Cell(
                n=n, key=t.key, kind=t.kind, store=t.store, fmt=t.fmt,
                p50=1000 * mt.percentile(xs, 50), p90=1000 * mt.percentile(xs, 90),
                mean=1000 * sum(xs) / len(xs), count=len(xs),
                req_bytes=len(s.body), resp_bytes=resp_bytes[t.key], phases=phases,
            )  # fmt: skip
            cells.append(cell)
            progress.cell(f"{t.label} {rep.fmt_n(n)}: p50 {cell.p50:.1f} ms, p90 {cell.p90:.1f} ms")
        return cells
    finally:
        for s in slots:
            s.close()


def _closed_loop(
    slots: list[Slot], seconds: float, max_steps: int, redis_pid: int | None = None
) -> srep.Load:
    """Every slot's own thread steps its session until the deadline; wall time runs from
    the common start to the last response. CPU of the client, the server and redis-server
    over the same window says who was busy."""
    nc = len(slots)
    barrier = threading.Barrier(nc + 1)
    start = [0.0]
    counts, finish = [0] * nc, [0.0] * nc
    lats: list[list[float]] = [[] for _ in range(nc)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        s = slots[i]
        barrier.wait()
        deadline = start[0] + seconds
        try:
            while counts[i] < max_steps and time.perf_counter() < deadline:
                lats[i].append(s.step()[0])
                counts[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finish[i] = time.perf_counter()

    for s in slots:
        s.conn.fresh()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(nc)]
    for t in threads:
        t.start()
    pids = [slots[0].target.proc.proc.pid, redis_pid or 0]
    cpu0, srv0 = os.times(), [h.cpu_seconds(p) for p in pids]
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(seconds + 120)
    cpu1, srv1 = os.times(), [h.cpu_seconds(p) for p in pids]
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"{slots[0].target.key}: closed loop failed: {errors[:1]!r}")
    wall = max(finish) - start[0]
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    all_lats = [x for xs in lats for x in xs]
    return srep.Load(
        steps=sum(counts), seconds=wall, cpu_seconds=cpu, lats=all_lats,
        server_cpu=srv1[0] - srv0[0], redis_cpu=srv1[1] - srv0[1],
    )  # fmt: skip


def run_concurrency(
    targets: list[Target],
    clients: int,
    seconds: float,
    rounds: int,
    progress: rep.Progress,
    redis_pid: int,
) -> list[srep.Concurrency]:
    _, binary, js = make_bodies(SMALL, seed=2)
    pools: dict[str, list[Slot]] = {}
    try:
        for t in targets:
            pools[t.key] = [Slot(t, SMALL, binary, js, f"conc{i}") for i in range(clients)]
            for s in pools[t.key]:
                s.step()
        for t in targets:  # warm-up: a short closed loop per system
            _closed_loop(pools[t.key], min(0.5, seconds), 10**6)
        before = {t.key: mt.scrape_phases(t.proc.port) for t in targets if t.kind == "optd"}
        loads: dict[str, list[srep.Load]] = {t.key: [] for t in targets}
        for r in range(rounds):
            k = r % len(targets)
            for t in targets[k:] + targets[:k]:
                loads[t.key].append(_closed_loop(pools[t.key], seconds, 10**6, redis_pid))
        out = []
        for t in targets:
            phases = {}
            if t.key in before:
                phases = mt.phase_means_ms(before[t.key], mt.scrape_phases(t.proc.port))
            c = srep.Concurrency(t.key, t.kind, t.store, clients, loads[t.key], phases)
            out.append(c)
            progress.cell(
                f"{t.label} {clients} clients x {rep.fmt_n(SMALL)}: {c.rate:.0f} steps/s "
                f"(p50 {c.p50:.1f} ms, server CPU {c.cpu_ms('server'):.2f} ms a step)"
            )
        return out
    finally:
        for slots in pools.values():
            for s in slots:
                s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1e3 and 1e5, 8 clients, < 60 s")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md (also quick)")
    ap.add_argument("--no-write", action="store_true", help="full run without writing")
    ap.add_argument("--clients", type=int, help="concurrent clients (32; quick 8)")
    ap.add_argument("--seconds", type=float, help="seconds per closed-loop round (3; quick 1.5)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    clients = args.clients or (8 if args.quick else 32)
    seconds = args.seconds or (1.5 if args.quick else 3.0)
    rounds = 1 if args.quick else 3
    write = args.write or not (args.quick or args.no_write)

    t_start = time.monotonic()
    procs: list[h.Proc] = []
    try:
        redis = h.start_redis()
        procs.append(redis)
        h.wait_redis(redis)
        url = f"redis://{h.HOST}:{redis.port}/0"
        targets = []
        for store in ("redis", "memory"):
            for fmt in ("binary", "json"):
                p = h.start_optd(f"optd-{store}-{fmt}", url if store == "redis" else None)
                procs.append(p)
                targets.append(Target(f"optd/{store}/{fmt}", "optd", store, fmt, p))
        echo = h.start_floor("floor-echo", None)
        echo_redis = h.start_floor("floor-echo-redis", url)
        procs += [echo, echo_redis]
        for fmt in ("binary", "json"):
            targets.append(Target(f"echo/{fmt}", "echo", "", fmt, echo))
            targets.append(Target(f"echo_redis/{fmt}", "echo_redis", "", fmt, echo_redis))
        for p in procs[1:]:
            h.wait_http(p)
        print(f"started redis-server, 4 optd servers and 2 floors in "
              f"{time.monotonic() - t_start:.1f} s")  # fmt: skip

        noise = h.Interference()
        conc_targets = [t for t in targets if t.fmt == "binary"]
        total = sum(len([t for t in targets if t.fmt == "binary" or n <= JSON_MAX])
                    for n, _, _ in sizes) + len(conc_targets)  # fmt: skip
        progress = rep.Progress(total)
        cells: list[srep.Cell] = []
        for n, repeats, warmup in sizes:
            size_targets = [t for t in targets if t.fmt == "binary" or n <= JSON_MAX]
            cells += run_size(n, repeats, warmup, size_targets, progress)
        conc = run_concurrency(conc_targets, clients, seconds, rounds, progress, redis.proc.pid)
        others = noise.other_cores()
        print(f"other processes on this machine used {others:.2f} cores on average meanwhile")
    finally:
        for p in reversed(procs):
            p.stop()

    skipped_json = [n for n, _, _ in sizes if n > JSON_MAX]
    text = srep.render(
        cells, conc, skipped_json, goals(cells, conc),
        quick=args.quick, redis=h.redis_version(), others=others,
    )  # fmt: skip
    rep.finish(text, srep.SECTION, t_start, write)


if __name__ == "__main__":
    main()
