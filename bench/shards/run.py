"""One big session on more than one API process: sharded sessions (DESIGN §3).

Run (from the repository root): `python -m bench.shards [--quick] [--write]`.

Issue #18 item 2. Systems, all driven by the Python SDK (`optd_client.Client`,
safetensors, Adam, float32, the same gradient every step), on `optd serve` processes
sharing one private redis-server (no persistence; the gradient log as configured by
default), and a Ray actor parameter server (bench/peers/ray_ps.py) when Ray is installed:

- `1 process, shards K`: one process; K = 1 is an ordinary (unsharded) session.
- `2 processes, shards K`: two processes behind a per-request round-robin balancer in the
  client (bench/peers/owners.py's `RoundRobin`), session owners on (redirect): each shard
  session is owned by the process that got its first request, and the SDK sends each
  shard's requests to its owner, in parallel.
- `Ray actor`: `ray.get(ps.step.remote(grads))` on one actor (state in its memory only).

Within a size the systems take turns step by step, order rotated every repeat, after
warm-up; client-side wall time per step, p50 and p90. Ratios are p50 over the
unsharded session on one process and over Ray's, in the same run.

Floors in the same run, to tell what binds (bench/shards/floors.py): the client's own
split + assemble for 2 shards (no I/O); one redis-server absorbing a step's gradient (a
SET of 4 bytes a parameter: what the gradient log costs the one Redis every shard
shares); the step's bytes through the SDK's HTTP client (httpx) and a bare echo server,
encoded and decoded as the SDK does, as one body and as two halves in parallel (what a
2-shard step moves). And each system's CPU per step, all processes of the machine
together: spread perfectly over every core, a step cannot take less wall time than that
CPU time over the core count.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis as redis_lib
from optd_client import Client

from bench.common import harness as h
from bench.common import report as rep
from bench.peers import procs as pp
from bench.peers import ray_ps
from bench.peers.owners import RoundRobin
from bench.shards.floors import floors, problem
from bench.shards.report import BASE, CORES, MACHINES, goals, why

SECTION = "## Sharded sessions (python -m bench.shards)"
# (parameters, tensors, repeats, warm-up steps, shard counts)
FULL = [(10_000_000, 1, 12, 2, (1, 2, 4)), (1_000_000, 200, 40, 3, (1, 2))]
QUICK = [(1_000_000, 1, 6, 1, (1, 2)), (200_000, 20, 6, 1, (1, 2))]


class OptdSystem:
    def __init__(self, make: Callable[[], Client], p0: dict[str, np.ndarray], shards: int) -> None:
        self.client = make()
        kw: dict[str, Any] = {"shards": shards} if shards > 1 else {}
        self.session = self.client.create_session("adam", p0, lr=1e-3, **kw)

    def step(self, g: dict[str, np.ndarray]) -> None:
        self.session.step(g)

    def close(self) -> None:
        self.session.delete()
        self.client.close()


class RaySystem:
    def __init__(self, p0: dict[str, np.ndarray]) -> None:
        import ray

        self.ray = ray
        self.actor = ray_ps.actor_class().remote(p0)

    def step(self, g: dict[str, np.ndarray]) -> None:
        self.ray.get(self.actor.step.remote(g))

    def close(self) -> None:
        self.ray.kill(self.actor)


def measure(
    n: int,
    tensors: int,
    repeats: int,
    warmup: int,
    ks: tuple[int, ...],
    urls: dict[str, Any],
    placed: Callable[[], None],
) -> dict[str, tuple[float, float, float]]:
    p0, g = problem(n, tensors)
    systems: dict[str, Any] = {}
    for k in ks:
        systems[f"1 process, shards {k}"] = OptdSystem(urls["one"], p0, k)
    for k in ks:
        systems[f"2 processes, shards {k}"] = OptdSystem(urls["two"], p0, k)
    if ray_ps.available():
        systems["Ray actor"] = RaySystem(p0)
    times: dict[str, list[float]] = {k: [] for k in systems}
    cpus: dict[str, list[float]] = {k: [] for k in systems}
    try:
        for _ in range(warmup):
            for s in systems.values():
                s.step(g)
        keys = list(systems)
        progress = rep.Progress(repeats)
        for r in range(repeats):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                c0, t0 = h.machine_busy_seconds(), time.perf_counter()
                systems[k].step(g)
                times[k].append(time.perf_counter() - t0)
                cpus[k].append(h.machine_busy_seconds() - c0)
            if r % max(1, repeats // 4) == 0 or r == repeats - 1:
                progress.i = r
                progress.cell(f"{rep.fmt_n(n)} x {tensors}: repeat {r + 1}")
        placed()  # while the sessions (and their owners' leases) exist
        check_same(systems)
    finally:
        for s in systems.values():
            s.close()
    return {
        k: (statistics.median(v), float(np.percentile(v, 90)), statistics.fmean(cpus[k]))
        for k, v in times.items()
    }


def check_same(systems: dict[str, Any]) -> None:
    """Every optd session took the same steps: sharded or not, on one process or two, the
    parameters must be the same bits (the run is void otherwise)."""
    got = {k: s.session.params() for k, s in systems.items() if isinstance(s, OptdSystem)}
    first_key, first = next(iter(got.items()))
    for k, p in got.items():
        for name, a in first.items():
            if a.tobytes() != p[name].tobytes():
                raise SystemExit(f"{k}: {name} differs from {first_key}'s: not benchmarking")


def owners(redis_url: str, procs: dict[str, h.Proc]) -> str:
    """Which process owns how many shard sessions now (the leases in Redis)."""
    r = redis_lib.Redis.from_url(redis_url)
    by_port = {str(p.port): name for name, p in procs.items()}
    counts: dict[str, int] = {}
    for key in r.scan_iter("optd:{*-s*}:owner"):
        holder = (r.get(key) or b"").decode().split(" ")[0]
        name = by_port.get(holder.rsplit(":", 1)[-1], holder)
        counts[name] = counts.get(name, 0) + 1
    r.close()
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    started = time.monotonic()
    procs: dict[str, h.Proc] = {}
    redis = procs["redis"] = h.start_redis()
    h.wait_redis(redis)
    url = f"redis://{h.HOST}:{redis.port}/0"
    for name in ("one", "a", "b"):
        procs[name] = h.start_optd(f"optd-{name}", url, {"OPTD_OWNERS": "redirect"})
    procs["echo"] = h.start_floor("echo", None)
    for name, p in procs.items():
        if name != "redis":
            h.wait_http(p)
    if ray_ps.available():
        ray_ps.start(num_cpus=2)
    one = f"http://{h.HOST}:{procs['one'].port}"
    pair = [procs["a"].port, procs["b"].port]
    urls = {
        "one": lambda: Client(one),
        "two": lambda: Client("http://balancer", transport=RoundRobin(pair)),
    }
    noise = pp.Noise()
    cells, rows, floor_rows, placed = {}, [], [], []
    floor_cells: dict[tuple[int, int], dict[str, float]] = {}
    try:
        for n, t, repeats, warmup, ks in QUICK if args.quick else FULL:
            where = f"{rep.fmt_n(n)} x {t}"
            cell = cells[(n, t)] = measure(
                n, t, repeats, warmup, ks, urls,
                lambda where=where: placed.append(f"{where}: {owners(url, procs)}"),
            )  # fmt: skip
            base, ray = cell[BASE][0], cell.get("Ray actor", (None,))[0]
            for k, (p50, p90, cpu) in cell.items():
                vs_ray = f"{p50 / ray:.2f}x" if ray else "-"
                rows.append(
                    f"| {rep.fmt_n(n)} | {t} | {k} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} "
                    f"| {p50 / base:.2f}x | {vs_ray} | {cpu * 1e3:.0f} "
                    f"| {cpu / CORES / base:.2f}x |"
                )
                print(rows[-1], flush=True)
            measured = floors(n, t, url, procs["echo"].port, max(3, repeats // 2))
            floor_cells[(n, t)] = measured
            for what, f in measured.items():
                floor_rows.append(
                    f"| {rep.fmt_n(n)} | {t} | {what} | {f * 1e3:.1f} | {f / base:.2f}x |"
                )
    finally:
        others = noise.other_cores()
        if ray_ps.available():
            ray_ps.stop()
        h.stop_all()
    ray_version = ray_ps.version() if ray_ps.available() else "not installed"
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python -m bench.shards{' --quick' if args.quick else ''}` (server code "
            f"{h.code_state()}; Ray {ray_version}). "
            "Python SDK, safetensors, Adam, float32, one Redis; see bench/shards/run.py's "
            "docstring for the setup. Ratios are p50 over `1 process, shards 1` (the "
            "unsharded session on one process) and over the Ray actor, in the same run.",
            "",
            *goals(cells),
            "",
            "| params | tensors | system | p50 ms | p90 ms | / unsharded, 1 process | / Ray "
            "| CPU ms a step (all processes) | CPU / cores / unsharded p50 |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Floors in the same run (p50):",
            "",
            "| params | tensors | floor | ms | / unsharded, 1 process |",
            "|---|---|---|---|---|",
            *floor_rows,
            "",
            *why(cells, floor_cells),
            MACHINES,
            "",
            "Shard sessions owned per process at the end of each size (leases in Redis): "
            + "; ".join(placed)
            + ".",
            "",
            rep.machine(h.redis_version(), others),
            "",
        ]
    )
    rep.finish(text, SECTION, started, args.write)
