"""optd on one Redis against a 3-master Redis Cluster: routing overhead, scale-out, WAIT cost.

Run: `python -m bench.cluster` (full: one-session latency at 1e3 and 1e6 parameters;
throughput of 32 sessions of 1e3 and of 4 sessions of 1e6 with 1, 2 and 4 API processes; a
few minutes; writes the `## Redis Cluster` section of bench/RESULTS.md) or
`python -m bench.cluster --quick` (1e3 only, 1 and 2 API processes, < 60 s; prints only,
unless --write).

What runs: a private `redis-server` (no persistence) and a private 6-node Redis Cluster
(3 masters + 3 replicas, bench/cluster/redis_cluster.py), and for each of three systems its own
`optd serve` processes: **one Redis**; **cluster** (`OPTD_REDIS_CLUSTER=1`, redis-py's
RedisCluster); **cluster + WAIT** (the same cluster with `OPTD_REDIS_WAIT_REPLICAS=1`: a step
is acknowledged once a replica has it). Replication to the replicas runs in both cluster
systems; WAIT only makes the step wait for it.

How it times: one-session latency is one client stepping one session through one API
process, the three systems taking turns step by step (order rotated every repeat), after
warm-up - the ratio of the cluster's p50 to one Redis's is the routing overhead. Throughput
is a closed loop (bench/common/load.py): one client thread per session, session i's thread talking
to API process i mod k; the systems alternate round by round.
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.cluster.cells import LatCell, LoadCell
from bench.cluster.redis_cluster import Cluster
from bench.cluster.report import render
from bench.common import harness as h
from bench.common import load as ld
from bench.common import metrics as mt
from bench.common import report as rep
from bench.common.slots import Slot, Target, make_bodies

SECTION = "## Redis Cluster (python -m bench.cluster)"
SYSTEMS = ("redis", "cluster", "cluster_wait")
# one-session latency: (parameters, repeats, warm-up steps)
FULL_LAT = [(1_000, 200, 10), (1_000_000, 30, 3)]
QUICK_LAT = [(1_000, 60, 5)]
# throughput: (sessions, parameters, seconds per round)
FULL_LOAD = [(32, 1_000, 3.0), (4, 1_000_000, 4.0)]
QUICK_LOAD = [(32, 1_000, 1.5)]


def run_latency(
    n: int, repeats: int, warmup: int, first: dict[str, h.Proc], progress: rep.Progress
) -> list[LatCell]:
    _, binary, js = make_bodies(n)
    slots = [Slot(Target(s, "optd", s, "binary", first[s]), n, binary, js, s) for s in SYSTEMS]
    try:
        for s in slots:
            for i in range(warmup):
                _, data = s.step()
                if i == 0:
                    s.check(data)
        times: dict[str, list[float]] = {s.target.key: [] for s in slots}
        before = {s: mt.scrape_phases(first[s].port) for s in SYSTEMS}
        gc.collect()
        gc.disable()
        try:
            for r in range(repeats):
                k = r % len(slots)
                for s in slots[k:] + slots[:k]:
                    times[s.target.key].append(s.step()[0])
        finally:
            gc.enable()
        cells = [
            LatCell(n, s, times[s], mt.phase_means_ms(before[s], mt.scrape_phases(first[s].port)))
            for s in SYSTEMS
        ]
        for c in cells:
            progress.cell(f"one session {rep.fmt_n(n)}, {c.system}: p50 {c.p(50):.2f} ms, "
                          f"p90 {c.p(90):.2f} ms")  # fmt: skip
        return cells
    finally:
        for s in slots:
            s.close()


def run_load(
    sessions: int,
    n: int,
    seconds: float,
    rounds: int,
    api_counts: tuple[int, ...],
    apis: dict[str, list[h.Proc]],
    redis_pids: dict[str, list[int]],
    progress: rep.Progress,
) -> list[LoadCell]:
    body = ld.gradient_body(n)
    sids: dict[str, list[str]] = {}
    try:
        for s in SYSTEMS:
            sids[s] = [ld.create_session(apis[s][0].port, n, seed=i) for i in range(sessions)]
        out = []
        for k in api_counts:
            lanes = {
                s: [ld.Lane(apis[s][i % k].port, sid, f"w{i}") for i, sid in enumerate(sids[s])]
                for s in SYSTEMS
            }
            for s in SYSTEMS:  # warm-up: every process loads the sessions it will serve
                ld.closed_loop(lanes[s], body, sync=False, seconds=0.5, max_steps=3, check=n)
            loads: dict[str, list[ld.Load]] = {s: [] for s in SYSTEMS}
            for r in range(rounds):
                j = r % len(SYSTEMS)
                for s in SYSTEMS[j:] + SYSTEMS[:j]:
                    pids = {"api": [p.proc.pid for p in apis[s][:k]], "redis": redis_pids[s]}
                    loads[s].append(ld.closed_loop(
                        lanes[s], body, sync=False, seconds=seconds, max_steps=10**6, pids=pids
                    ))  # fmt: skip
            for s in SYSTEMS:
                c = LoadCell(sessions, n, k, s, ld.merge(loads[s]))
                out.append(c)
                errs = f", non-200 {c.load.errors}" if c.load.errors else ""
                progress.cell(
                    f"{sessions} x {rep.fmt_n(n)}, {k} API, {s}: {c.load.rate:.1f} steps/s, "
                    f"p50 {1000 * mt.percentile(c.load.lats, 50):.1f} ms{errs}"
                )
        return out
    finally:
        for s, ids in sids.items():
            ld.delete_sessions(apis[s][0].port, ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1e3 only, 1 and 2 API processes")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md (also quick)")
    ap.add_argument("--no-write", action="store_true", help="full run without writing")
    args = ap.parse_args()
    lat_sizes = QUICK_LAT if args.quick else FULL_LAT
    load_sizes = QUICK_LOAD if args.quick else FULL_LOAD
    api_counts = (1, 2) if args.quick else (1, 2, 4)
    rounds = 1 if args.quick else 2
    write = args.write or not (args.quick or args.no_write)

    t_start = time.monotonic()
    code = h.code_state()
    procs: list[h.Proc] = []
    cluster = Cluster()
    try:
        redis = h.start_redis()
        procs.append(redis)
        h.wait_redis(redis)
        cluster.start()
        print(f"redis-server and a 6-node cluster up in {time.monotonic() - t_start:.1f} s")
        urls = {"redis": f"redis://{h.HOST}:{redis.port}/0"}
        urls["cluster"] = urls["cluster_wait"] = cluster.url
        env = {
            "redis": {},
            "cluster": {"OPTD_REDIS_CLUSTER": "1"},
            "cluster_wait": {"OPTD_REDIS_CLUSTER": "1", "OPTD_REDIS_WAIT_REPLICAS": "1"},
        }
        apis = {
            s: [h.start_optd(f"optd-{s}-{i}", urls[s], env[s]) for i in range(max(api_counts))]
            for s in SYSTEMS
        }
        for ps in apis.values():
            procs += ps
        for p in procs[1:]:
            h.wait_http(p)
        print(f"started {len(procs) - 1} optd processes; {time.monotonic() - t_start:.1f} s")
        redis_pids = {"redis": [redis.proc.pid], "cluster": cluster.pids}
        redis_pids["cluster_wait"] = cluster.pids
        noise = h.Interference()
        total = len(SYSTEMS) * (len(lat_sizes) + len(load_sizes) * len(api_counts))
        progress = rep.Progress(total)
        first = {s: apis[s][0] for s in SYSTEMS}
        lat: list[LatCell] = []
        for n, repeats, warmup in lat_sizes:
            lat += run_latency(n, repeats, warmup, first, progress)
        loads: list[LoadCell] = []
        for sessions, n, secs in load_sizes:
            loads += run_load(sessions, n, secs, rounds, api_counts, apis, redis_pids, progress)
        others = noise.other_cores()
        print(f"other processes on this machine used {others:.2f} cores on average meanwhile")
    finally:
        for p in reversed(procs):
            p.stop()
        cluster.stop()

    text = render(
        lat, loads, SECTION, quick=args.quick, rounds=rounds, load_sizes=load_sizes,
        lat_sizes=lat_sizes, redis=h.redis_version(), others=others, code=code,
    )  # fmt: skip
    rep.finish(text, SECTION, t_start, write)


if __name__ == "__main__":
    main()
