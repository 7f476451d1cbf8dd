"""DiLoCo over optd: 4 worker processes train one model on rare, compressed rounds, and
one of them dies halfway.

The digits MLP (64-64-10, torch) is trained by 4 worker processes three ways, each on its
own elastic sync session (workers 4, min_workers 2, worker_lease_s 2, round_timeout_s 10):

  sync  sync data parallel: a round every step, float32 gradients, Adam (lr 0.1) on the
        server - the baseline;
  bf16  DiLoCo: 25 inner AdamW steps (lr 0.01) per worker, then a round whose
        pseudo-gradient travels as bfloat16; the server runs SGD with Nesterov momentum
        (lr 0.7, momentum 0.9) as the outer optimizer;
  int8  the same with int8-block pseudo-gradients and error feedback.

Both learning rates decay to 0 with a cosine over the run, from peaks that were the
best after 1000 steps on a small grid (examples/_diloco.py): a fair race.

Halfway through each run worker w3 gets SIGKILL: the round it was part of closes once its
2 s lease runs out, and a new worker, w4, joins the running group from the current global
parameters. The plot shows the full training loss against the bytes all workers sent
(log scale) and against wall time, with the kill and the join marked.

    python examples/diloco.py [--url URL] [--steps 1000] [--quick]
"""

from __future__ import annotations

import os

import numpy as np
from _common import Progress, digits, parser, plt, save
from _diloco import JOINER, LEASE_S, MODES, VICTIM, H, context
from _diloco_runs import Run, bytes_to_reach, run
from _server import optd_server

QUICK_STEPS = 300


def plot(runs: list[Run], steps: int, load: float, out: os.PathLike[str]) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for i, r in enumerate(runs):
        t, _, loss, sent = (np.array(c) for c in zip(*r.trace, strict=True))
        color = f"C{i}"
        label = (f"{r.mode.label}: {r.final[3] / 1e6:.2f} MB sent, final loss "
                 f"{r.final[2]:.2g}, {r.seconds:.1f} s")  # fmt: skip
        keep = sent > 0  # log x: from the first reported round on
        ax1.plot(sent[keep], loss[keep], "-", color=color, label=label)
        ax2.plot(t, loss, "-", color=color)
        for ax, key in ((ax1, "bytes"), (ax2, "t")):
            if r.kill.get(key):
                ax.axvline(r.kill[key], color=color, ls=":", lw=1.2)
        if r.join:
            join_bytes = np.interp(r.join["t"], t, sent)
            ax1.axvline(join_bytes, color=color, ls="--", lw=1.0)
            ax2.axvline(r.join["t"], color=color, ls="--", lw=1.0)
    ax1.plot([], [], "k:", label=f"w{VICTIM} killed (SIGKILL)")
    ax1.plot([], [], "k--", label=f"w{JOINER} joined")
    for ax in (ax1, ax2):
        ax.set(ylabel="full training loss (log)", yscale="log")
    fig.legend(loc="outside lower center", ncols=2, fontsize=9)  # one for both panels
    ax1.set(xlabel="bytes sent by all workers (log)", xscale="log",
            title="Loss against bytes sent")  # fmt: skip
    ax2.set(xlabel="wall time (s)", title="Loss against wall time")
    fig.suptitle(
        f"4 workers, {steps} inner steps each (DiLoCo: a round every {H}), one killed and one "
        f"joining halfway (lease {LEASE_S:g} s)\n{os.cpu_count()} CPU cores shared by the "
        f"server and the workers (load average {load:.1f} before the runs)"
    )
    save(fig, out)


def main() -> None:
    p = parser("diloco", __doc__, steps=1000)
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_STEPS} inner steps per worker (a smoke run)")  # fmt: skip
    args = p.parse_args()
    steps = QUICK_STEPS if args.quick else args.steps
    log = Progress(args.quiet)
    x, y, _, _ = digits(args.seed)
    load = os.getloadavg()[0]
    # the workers' fork server starts (imports torch) while the optd server starts; a worker
    # re-imports this script, and so what it imports
    context(preload=("_common", "_server", "_diloco_runs"))
    runs = []
    with optd_server(args.url, quiet=args.quiet) as url:
        for mode in MODES:
            rounds = steps // mode.sync_every
            log(f"[{mode.key}] {mode.label}: {rounds} rounds of 4 workers")
            r = run(url, mode, rounds, (x, y), args.seed, log)
            log(f"[{mode.key}] done in {r.seconds:.1f} s: loss {r.final[2]:.4f}, "
                f"{r.final[3] / 1e6:.3f} MB sent; the session: {r.ui_url}")  # fmt: skip
            runs.append(r)
    plot(runs, steps, load, args.out)
    base = runs[0]
    summary: dict[str, object] = {}
    for r in runs:
        # bytes the baseline needed to get as low as this run ended (its own total if never)
        need = bytes_to_reach(base.trace, r.final[2]) or base.final[3]
        summary[r.mode.key] = {
            "label": r.mode.label,
            "final_loss": r.final[2],
            "bytes": r.final[3],
            "seconds": r.seconds,
            "rounds": r.final[1],
            "kill": r.kill,
            "join": r.join,
            "round_s": r.round_s,
            "fewer_bytes_than_sync": base.final[3] / r.final[3],
            "sync_bytes_to_this_loss": need,
        }
        if r is not base:
            log(f"{r.mode.label}: {base.final[3] / r.final[3]:.0f}x fewer bytes than sync "
                f"data parallel, final loss {r.final[2]:.4f} vs {base.final[2]:.4f}")  # fmt: skip
    Progress.summary(
        initial_loss=base.trace[0][2],
        final_loss=min(r.final[2] for r in runs),
        steps=steps,
        load_average=load,
        runs=summary,
    )


if __name__ == "__main__":
    main()
