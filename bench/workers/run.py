"""Many workers on one optimizer: aggregate steps/s, latency and wasted (retried) work.

Run: `python -m bench.workers` (full: 1e3 and 1e6 float32 parameters, 1/2/4/8 workers,
one shared session and one session per worker, async and sync, 1 and 2 API processes; a few
minutes; writes the `## Many workers` section of bench/RESULTS.md) or
`python -m bench.workers --quick` (1e3 only, 1 and 4 workers, < 60 s; prints only,
unless --write).

What runs: one private `redis-server` (no persistence) and two `optd serve` processes on it,
A and B. "1 API process" sends every worker to A; "2 API processes" sends worker i to A or B
by i mod 2 (each worker keeps one keep-alive connection, as behind an L4 load balancer), so
both processes step the same session and only the compare-and-set on the version keeps it
right (DESIGN.md §4). A worker is a client thread (bench/common/load.py) that sends a binary
gradient with `Optd-Worker` and `Optd-Base-Version`; sync sessions are created with
`mode: "sync", workers: N` (N = the workers sharing it; 1 for a session of its own), and a
round is one step. Wasted work is the server's `optd_commit_conflicts_total` (a step
computed, then lost to another writer and recomputed) over `optd_steps_total`, both scraped
from every API process before and after each timed window.

Cells: for each size, mode, sharing and worker count, the two API configurations alternate
round by round (order rotated), each after a short warm-up on fresh sessions; the goal's cell
(8 workers on one 1e6 session) runs 6 rounds instead of 2.
"""

from __future__ import annotations

import argparse
import time

from bench.common import harness as h
from bench.common import load as ld
from bench.common import metrics as mt
from bench.common import report as rep
from bench.workers.cells import Result
from bench.workers.report import render

FULL = [(1_000, 2.0), (1_000_000, 4.0)]  # (parameters, seconds per round)
QUICK = [(1_000, 1.5)]
# The goal's cell (8 workers, one 1e6 session) gets more rounds: lost races come in bursts
# (a process takes the advisory lock for 5 s after it loses), so 2 rounds vary too much.
GOAL_CELL, GOAL_ROUNDS = (1_000_000, True, 8), 6
MODES = ("async", "sync")
SECTION = "## Many workers (python -m bench.workers)"


def run_cell(
    n: int,
    mode: str,
    shared: bool,
    workers: int,
    systems: dict[int, list[h.Proc]],
    seconds: float,
    rounds: int,
    redis_pid: int,
) -> list[Result]:
    sync = mode == "sync"
    body = ld.gradient_body(n)
    lanes: dict[int, list[ld.Lane]] = {}
    sids: dict[int, list[str]] = {}
    try:
        for apis, procs in systems.items():
            port0 = procs[0].port
            per = workers if sync else None
            if shared:
                sids[apis] = [ld.create_session(port0, n, sync_workers=per)]
            else:
                one = 1 if sync else None
                sids[apis] = [ld.create_session(port0, n, sync_workers=one, seed=i)
                              for i in range(workers)]  # fmt: skip
            lanes[apis] = [
                ld.Lane(procs[i % len(procs)].port, sids[apis][0 if shared else i], f"w{i}")
                for i in range(workers)
            ]
            ld.closed_loop(lanes[apis], body, sync=sync, seconds=0.5, max_steps=3, check=n)
        loads: dict[int, list[ld.Load]] = {a: [] for a in systems}
        deltas: dict[int, dict[str, float]] = {a: {} for a in systems}
        split = {a: [(0.0, 0.0)] * len(procs) for a, procs in systems.items()}
        by_round: dict[int, list[tuple[float, float]]] = {a: [] for a in systems}
        order = list(systems)
        for r in range(rounds):
            k = r % len(order)
            for apis in order[k:] + order[:k]:
                procs = systems[apis]
                before = [mt.scrape_samples(p.port) for p in procs]
                pids = {"api": [p.proc.pid for p in procs], "redis": [redis_pid]}
                load = ld.closed_loop(
                    lanes[apis], body, sync=sync, seconds=seconds, max_steps=10**6, pids=pids
                )
                after = [mt.scrape_samples(p.port) for p in procs]
                loads[apis].append(load)
                split[apis] = [
                    (s0 + a["optd_steps_total"] - b["optd_steps_total"],
                     c0 + a["optd_commit_conflicts_total"] - b["optd_commit_conflicts_total"])
                    for (s0, c0), b, a in zip(split[apis], before, after, strict=True)
                ]  # fmt: skip
                for name in ("optd_steps_total", "optd_commit_conflicts_total",
                             "optd_stale_refusals_total", "optd_staleness_sum",
                             "optd_staleness_count"):  # fmt: skip
                    d = deltas[apis]
                    d[name] = d.get(name, 0.0) + ld.counters_delta(before, after, name)
                by_round[apis].append((
                    ld.counters_delta(before, after, "optd_steps_total"),
                    ld.counters_delta(before, after, "optd_commit_conflicts_total"),
                ))  # fmt: skip
        out = []
        for apis in systems:
            d = deltas[apis]
            out.append(Result(
                n, mode, shared, workers, apis, ld.merge(loads[apis]),
                d["optd_steps_total"], d["optd_commit_conflicts_total"],
                d["optd_stale_refusals_total"], d["optd_staleness_sum"],
                d["optd_staleness_count"], split[apis], by_round[apis],
            ))  # fmt: skip
        return out
    finally:
        for apis, procs in systems.items():
            ld.delete_sessions(procs[0].port, sids.get(apis, []))


def cell_line(r: Result) -> str:
    share = "one session" if r.shared else "own sessions"
    waste = 100 * r.conflicts / r.server_steps if r.server_steps else float("nan")
    errs = f", non-200 {r.load.errors}" if r.load.errors else ""
    return (
        f"{rep.fmt_n(r.n)} {r.mode} {r.workers} workers {share}, {r.apis} API: "
        f"{r.load.rate:.0f} steps/s, p50 {1000 * mt.percentile(r.load.lats, 50):.1f} ms, "
        f"conflicts {r.conflicts:.0f}/{r.server_steps:.0f} steps ({waste:.1f}%){errs}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1e3 only, 1 and 4 workers, < 60 s")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md (also quick)")
    ap.add_argument("--no-write", action="store_true", help="full run without writing")
    ap.add_argument("--seconds", type=float, help="override seconds per round")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    worker_counts = (1, 4) if args.quick else (1, 2, 4, 8)
    rounds = 1 if args.quick else 2
    write = args.write or not (args.quick or args.no_write)

    t_start = time.monotonic()
    code = h.code_state()  # what the servers import at start-up
    procs: list[h.Proc] = []
    results: list[Result] = []
    try:
        redis = h.start_redis()
        procs.append(redis)
        h.wait_redis(redis)
        url = f"redis://{h.HOST}:{redis.port}/0"
        api = [h.start_optd(f"optd-{x}", url) for x in "AB"]
        procs += api
        for p in api:
            h.wait_http(p)
        print(f"started redis-server and 2 optd processes in {time.monotonic() - t_start:.1f} s")
        noise = h.Interference()
        plan = [
            (n, secs, mode, shared, w)
            for n, secs in sizes
            for mode in MODES
            for shared in (True, False)
            for w in worker_counts
            if shared or w > 1  # one worker on its own session = one worker on one session
        ]
        progress = rep.Progress(sum(1 if w == 1 else 2 for *_, w in plan))
        for n, secs, mode, shared, w in plan:
            systems = {1: api[:1]} if w == 1 else {1: api[:1], 2: api}
            k = GOAL_ROUNDS if (n, shared, w) == GOAL_CELL and not args.quick else rounds
            cell = run_cell(n, mode, shared, w, systems, args.seconds or secs, k,
                            redis.proc.pid)  # fmt: skip
            for r in cell:
                progress.cell(cell_line(r))
            results += cell
        others = noise.other_cores()
        print(f"other processes on this machine used {others:.2f} cores on average meanwhile")
    finally:
        for p in reversed(procs):
            p.stop()

    text = render(results, SECTION, quick=args.quick, rounds=rounds, sizes=sizes,
                  redis=h.redis_version(), others=others, code=code)  # fmt: skip
    rep.finish(text, SECTION, t_start, write)


if __name__ == "__main__":
    main()
