"""`python -m bench.diloco [--quick] [--write]`: DiLoCo over optd (issue #17).

The runs are examples/diloco.py's, from the same code (examples/_diloco.py): the digits
MLP (64-64-10) trained by 4 worker processes on one elastic sync session (min_workers 2,
worker_lease_s 2, round_timeout_s 10) as sync data parallel (a float32 round every step,
Adam on the server), DiLoCo H=25 with bfloat16 pseudo-gradients, and DiLoCo with int8 +
error feedback (inner AdamW, outer SGD Nesterov lr 0.7). Halfway through each run worker
w3 gets SIGKILL, and once the round that waited for it has closed, a spare worker w4 joins.

Measured, against the goals of issue #17:
  (i)   bytes the workers sent to reach the same loss, DiLoCo against sync data parallel
        (goal: >= 50x fewer, at a final loss within 5% of sync data parallel's);
  (ii)  seconds from the SIGKILL to the close of the round that waited for the dead worker
        (goal: <= worker_lease_s + 0.5 s);
  (iii) seconds from the new worker's join to its first accepted contribution, and in
        which round (goal: <= one round: the round open when it joined).

Full: 1000 inner steps per worker, 2 repetitions of the three runs (a few minutes; writes
the `## DiLoCo` section of bench/RESULTS.md). `--quick`: 300 steps, once (< 60 s; prints
only, unless --write).
"""

from __future__ import annotations

import argparse
import os
import time
from multiprocessing import forkserver
from pathlib import Path

import _diloco as dl  # examples/ (bench/diloco/__init__.py puts it on the path)
import _diloco_runs as dr
from _common import digits

from bench.common import harness as h
from bench.common import report as rep
from bench.diloco.report import render

SECTION = "## DiLoCo (python -m bench.diloco)"


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process and of its children it has reaped (/proc; 0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _ours(server: h.Proc) -> float:
    t = os.times()
    # the workers are the fork server's children (it reaps them: its cutime)
    fs_pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    return t.user + t.system + _tree_cpu(server.proc.pid) + _tree_cpu(fs_pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 steps, once, < 60 s")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md (also quick)")
    ap.add_argument("--no-write", action="store_true", help="full run without writing")
    ap.add_argument("--steps", type=int, help="inner steps per worker (default 1000; quick 300)")
    ap.add_argument("--repeat", type=int, help="repetitions of the three runs (default 2)")
    args = ap.parse_args()
    steps = args.steps or (300 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 2)
    write = args.write or not (args.quick or args.no_write)

    t_start = time.monotonic()
    code = h.code_state()
    load = os.getloadavg()[0]
    # the workers' fork server imports torch while optd starts; each worker re-imports this
    # module (`__mp_main__` of `python -m bench.diloco`), so it imports it too
    dl.context(preload=("_common", "_diloco_runs", "bench.diloco.run"))
    server = h.start_optd("optd", None)  # the embedded store, as the example
    runs: list[tuple[int, dr.Run]] = []
    try:
        h.wait_http(server)
        url = f"http://{h.HOST}:{server.port}"
        x, y, _, _ = digits(0)
        busy0, ours0, t0 = h.machine_busy_seconds(), _ours(server), time.monotonic()
        progress = rep.Progress(repeat * len(dl.MODES))
        for i in range(repeat):
            for mode in dl.MODES:
                r = dr.run(url, mode, steps // mode.sync_every, (x, y), i, print)
                runs.append((i, r))
                progress.cell(
                    f"seed {i}, {mode.key}: loss {r.final[2]:.4f}, {r.final[3] / 1e6:.3f} MB, "
                    f"{r.seconds:.1f} s; kill -> close {r.kill['close_s']:.2f} s; join -> "
                    f"accepted {r.join.get('first_s', float('nan')):.2f} s"
                )
        wall = time.monotonic() - t0
        others = max(0.0, h.machine_busy_seconds() - busy0 - (_ours(server) - ours0)) / wall
        print(f"other processes on this machine used {others:.2f} cores on average meanwhile")
    finally:
        server.stop()

    text = render(runs, SECTION, steps=steps, quick=args.quick, load=load, others=others,
                  code=code)  # fmt: skip
    rep.finish(text, SECTION, t_start, write)


if __name__ == "__main__":
    main()
