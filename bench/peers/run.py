"""optd against its peers: a Ray actor parameter server, a naive JSON server, and floors.

Run (from the repository root): `python -m bench` (full: 1e3..1e7 parameters as one tensor
and as 200 tensors, 32 concurrent clients; a few minutes; writes the `## Peers` section of
bench/RESULTS.md and bench/scaling.png) or `python -m bench --quick` (CI smoke: 1e3 and 1e5,
few repeats, 8 clients, < 60 s; prints only, unless --write). Ray is optional
(`pip install ray`): without it the Ray cells are skipped with a note.

What runs, all in this process tree and this run: a private `redis-server` (no persistence);
`optd serve` processes - Redis store binary, Redis store JSON, memory store binary, memory
store JSON (one per cell kind, so each Prometheus phase histogram belongs to one cell), and
two more on the same Redis for "2 API processes"; the two floor servers of bench/common/floors.py;
bench/peers/naive_server.py; a private local Ray (the machine's cores, no dashboard, loopback
only; started before any timing) with one bench/peers/ray_ps.py actor per session; and in this
process the arithmetic floors (bench/common/np_adam.py, torch fused Adam on 1 thread).

How it times: as bench/service/run.py - within a size and layout the systems take turns
step by step, order rotated every repeat, after warm-up (whose first answer is checked);
client-side wall time per step; optd's server-side split from `optd_step_phase_seconds`.
Memory: the optd processes' VmHWM around the largest cell (reset with clear_refs just before
its session is created). Throughput: a closed loop of N client threads, one session each.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

from bench.common import harness as h
from bench.common import metrics as mt
from bench.common import report as rep
from bench.peers import cells as pc
from bench.peers import procs as pp
from bench.peers import ray_ps
from bench.peers import report as pr
from bench.peers import results as res
from bench.peers import systems as ps
from bench.peers.goals import goals
from bench.peers.load import run_concurrency
from bench.peers.plot import plot

# (parameters, repeats, warm-up steps)
FULL = [(1_000, 200, 5), (100_000, 50, 4), (1_000_000, 25, 3), (10_000_000, 6, 2)]
QUICK = [(1_000, 25, 2), (100_000, 5, 2)]
LAYOUTS = (1, 200)
JSON_MAX = 1_000_000  # JSON above: seconds a step and >100 MB of text; not run
PNG = h.ROOT / "bench" / "scaling.png"


def scrape(procs: tuple[h.Proc, ...]) -> dict[str, tuple[float, float]]:
    """The phase histogram's (sum, count), summed over a system's processes."""
    total: dict[str, list[float]] = {}
    for p in procs:
        for phase, (s, c) in mt.scrape_phases(p.port).items():
            acc = total.setdefault(phase, [0.0, 0.0])
            acc[0] += s
            acc[1] += c
    return {k: (v[0], v[1]) for k, v in total.items()}


def _timed(sessions: list[pc.Session], repeats: int) -> list[list[float]]:
    times: list[list[float]] = [[] for _ in sessions]
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(sessions)
            for i in list(range(k, len(sessions))) + list(range(k)):
                times[i].append(sessions[i].step())
    finally:
        gc.enable()
    return times


def run_group(
    problem: pc.Problem,
    systems: list[ps.System],
    repeats: int,
    warmup: int,
    progress: rep.Progress,
    track_memory: bool,
    idle_kb: dict[str, int],
) -> tuple[list[res.PeerCell], list[res.MemCell]]:
    tracked = {
        s.key: s.procs[0].proc.pid
        for s in systems
        if track_memory and s.kind == "optd" and len(s.procs) == 1 and not s.json
    }
    before_kb = {}
    for key, pid in tracked.items():
        pp.reset_hwm(pid)
        before_kb[key] = pp.rss_kb(pid)
    sessions: list[pc.Session] = []
    try:
        for s in systems:
            sessions.append(s.opener(problem))
        ray_pids = {
            s.key: getattr(x, "pid", 0)
            for s, x in zip(systems, sessions, strict=True)
            if track_memory and s.kind == "ray"
        }
        for key, pid in ray_pids.items():
            pp.reset_hwm(pid)
            before_kb[key] = pp.rss_kb(pid)
        for x in sessions:
            x.first(problem)
            for _ in range(warmup - 1):
                x.step()
        phases0 = {s.key: scrape(s.procs) for s in systems if s.kind == "optd"}
        times = _timed(sessions, repeats)
        cells = []
        for s, x, xs in zip(systems, sessions, times, strict=True):
            phases = mt.phase_means_ms(phases0[s.key], scrape(s.procs)) if s.key in phases0 else {}
            req = len(x.body) if isinstance(x, pc.HttpSession) else 0
            resp = len(x.last) if isinstance(x, pc.HttpSession) else 0
            if isinstance(x, pc.RaySession):
                req, resp = 4 * problem.n, sum(a.nbytes for a in x.last.values())
            c = res.PeerCell(
                problem.n,
                problem.parts,
                s.key,
                s.kind,
                p50=1000 * mt.percentile(xs, 50),
                p90=1000 * mt.percentile(xs, 90),
                mean=1000 * sum(xs) / len(xs),
                count=len(xs),
                req_bytes=req,
                resp_bytes=resp,
                phases=phases,
            )
            cells.append(c)
            progress.cell(
                f"{rep.fmt_n(problem.n)} x{problem.parts} {s.label}: p50 "
                f"{c.p50:.2f} ms, p90 {c.p90:.2f} ms"
            )
        mem = []
        for key, pid in {**tracked, **ray_pids}.items():
            note = "before = after the actor took its state" if key == "ray" else ""
            mem.append(
                res.MemCell(
                    problem.n,
                    problem.parts,
                    key,
                    before_kb=before_kb[key],
                    peak_kb=pp.rss_kb(pid, "VmHWM"),
                    state_bytes=problem.state_bytes,
                    idle_kb=idle_kb.get(key, -1),
                    note=note,
                )
            )
        return cells, mem
    finally:
        for x in sessions:
            x.close()


def _skipped(cells: list[res.PeerCell], systems: list[ps.System], n: int, parts: int) -> str:
    """Why the JSON systems are not run at this size, from the largest JSON cells measured."""
    est = []
    for s in systems:
        if not s.json:
            continue
        done = [c for c in cells if c.key == s.key and c.parts == parts and c.n < n]
        if done:
            ref = max(done, key=lambda c: c.n)
            est.append(f"{s.label} ~{ref.p50 * n / ref.n / 1000:.1f} s")
    text = ", ".join(est) or "too slow to repeat"
    return (
        f"{rep.fmt_n(n)} x{parts}: JSON systems not run (a step's body is over 100 MB of "
        f"decimal text; extrapolated linearly: {text})"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 1e3 and 1e5, < 60 s")
    ap.add_argument(
        "--write", action="store_true", help="write RESULTS.md and the PNG (also quick)"
    )
    ap.add_argument("--no-write", action="store_true", help="full run, print only")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray even if it is installed")
    ap.add_argument(
        "--sizes", help="only these parameter counts, e.g. 1e3,1e6 (print only; for profiling)"
    )
    ap.add_argument("--clients", type=int, help="concurrent clients (32; quick 8)")
    ap.add_argument("--seconds", type=float, help="seconds per closed-loop round (3; quick 1)")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.sizes:
        only = {int(float(x)) for x in args.sizes.split(",")}
        sizes = [s for s in FULL if s[0] in only]
        args.no_write = True
    clients = args.clients or (8 if args.quick else 32)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    rounds = 1 if args.quick else 3
    write = args.write or not (args.quick or args.no_write)
    use_ray = ray_ps.available() and not args.no_ray
    notes: list[str] = []
    if not use_ray:
        why = "--no-ray" if args.no_ray else "ray is not importable (`pip install ray`)"
        notes.append(f"the Ray actor parameter server was not run: {why}.")
    try:
        import torch

        torch.set_num_threads(1)
        torch_ok = True
    except ImportError:
        torch_ok = False
        notes.append("torch is not installed: no torch fused Adam floor.")

    t_start = time.monotonic()
    procs: dict[str, h.Proc] = {}
    ray_version = None
    try:
        ps.start_servers(procs)
        print(
            f"started redis-server, 6 optd servers, 2 floors and the naive server in "
            f"{time.monotonic() - t_start:.1f} s",
            flush=True,
        )
        actor_cls = None
        if use_ray:
            t0 = time.monotonic()
            ray_ps.start(num_cpus=os.cpu_count() or 2)
            actor_cls, ray_version = ray_ps.actor_class(), ray_ps.version()
            print(f"started Ray {ray_version} in {time.monotonic() - t0:.1f} s", flush=True)
        systems = ps.build(procs, actor_cls, torch_ok)
        idle_kb = {s.key: pp.rss_kb(s.procs[0].proc.pid) for s in systems if s.kind == "optd"}
        # throughput: binary optd and floors, Ray, and the naive server (JSON by nature)
        conc_systems = [
            s
            for s in systems
            if s.kind not in ("numpy", "torch") and (not s.json or s.kind == "naive")
        ]
        total = sum(
            len([s for s in systems if not s.json or n <= JSON_MAX])
            for n, _, _ in sizes
            for _ in LAYOUTS
        ) + len(conc_systems)
        progress = rep.Progress(total)
        noise = pp.Noise()
        cells: list[res.PeerCell] = []
        mem: list[res.MemCell] = []
        skipped: list[str] = []
        biggest = max(n for n, _, _ in sizes)
        for n, repeats, warmup in sizes:
            for parts in LAYOUTS:
                these = [s for s in systems if not s.json or n <= JSON_MAX]
                if len(these) < len(systems):
                    skipped.append(_skipped(cells, systems, n, parts))
                got, m = run_group(
                    pc.Problem(n, parts), these, repeats, warmup, progress, n == biggest, idle_kb
                )
                cells += got
                mem += m
        conc = run_concurrency(conc_systems, procs, clients, seconds, rounds, progress)
        others = noise.other_cores()
        print(f"other processes on this machine used {others:.2f} cores on average meanwhile")
    finally:
        if use_ray:
            ray_ps.stop()
        for p in reversed(list(procs.values())):
            p.stop()

    labels = {s.key: s.label for s in systems}
    mode = "`--quick` (1e3 and 1e5 only, few repeats)" if args.quick else "full"
    reps = ", ".join(f"{rep.fmt_n(n)}: {r}" for n, r, _ in sizes)
    reps += f"; throughput: {clients} clients, {rounds} x {seconds:g} s per system"
    text = pr.render(
        cells,
        mem,
        conc,
        goals(cells, mem, conc),
        labels,
        mode=mode,
        reps=reps,
        skipped=skipped,
        notes=notes,
        redis=h.redis_version(),
        others=others,
        ray_version=ray_version,
    )
    print()
    print(text)
    if write:
        rep.write_section(text, pr.SECTION)
        subtitle = (
            f"{os.cpu_count()} cores, client and servers on one machine; p50 of "
            f"{reps.split(';')[0]} steps; optd over Redis is durable, the others are not"
        )
        plot(cells, labels, PNG, subtitle)
        print(f"wrote {rep.RESULTS.relative_to(h.ROOT)} and {PNG.relative_to(h.ROOT)}")
    print(f"total {time.monotonic() - t_start:.1f} s")


if __name__ == "__main__":
    main()
