"""Rosenbrock: Adam, AdamW, AMSGrad, RAdam, AdaBelief and Lion side by side.

f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum f(1, 1) = 0, from the classic start
(-1.5, 2). Each optimizer is its own optd session whose only parameter is the 2-D
point; the client sends the exact gradient, the server returns the next point.
Every session clips the gradient to global norm 10 (`max_grad_norm`): RAdam's first
steps (rho_t <= 5) are plain momentum SGD on the raw gradient (~155 here), which at
this learning rate throws it far off the plot, exactly as `torch.optim.RAdam` does.

    python examples/rosenbrock.py [--url URL] [--steps 2000]
"""

from __future__ import annotations

import time

import numpy as np
from _common import Progress, every, parser, plt, save
from _server import optd_server
from matplotlib.colors import LogNorm
from optd_client import Client

START = (-1.5, 2.0)
CLIP = 10.0
FLOOR = 1e-22  # for the log axis (Lion and AMSGrad can land exactly on the minimum)
# label -> (optimizer, hyperparameters)
OPTIMIZERS = {
    "Adam": ("adam", {"lr": 0.05}),
    "AdamW": ("adamw", {"lr": 0.05, "weight_decay": 0.01}),
    "AMSGrad": ("adam", {"lr": 0.05, "amsgrad": True}),
    "RAdam": ("radam", {"lr": 0.05}),
    "AdaBelief": ("adabelief", {"lr": 0.05}),
    "Lion": ("lion", {"lr": 0.002}),
}


def rosenbrock(p: np.ndarray) -> float:
    x, y = p
    return float((1 - x) ** 2 + 100 * (y - x * x) ** 2)


def gradient(p: np.ndarray) -> np.ndarray:
    x, y = p
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def main() -> None:
    args = parser("rosenbrock", __doc__, steps=2000, seed=False).parse_args()
    log = Progress(args.quiet)
    start = np.array(START)
    t0 = time.perf_counter()
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        sessions = {
            label: client.create_session(
                name, {"xy": start}, dtype="float64", max_grad_norm=CLIP, **hp
            )
            for label, (name, hp) in OPTIMIZERS.items()
        }
        paths = {label: [start.copy()] for label in sessions}
        for step in range(args.steps):
            for label, session in sessions.items():
                p = paths[label][-1]
                new = session.step({"xy": gradient(p)}, loss=rosenbrock(p))
                paths[label].append(new["xy"])
            if step % every(args.steps) == 0 or step == args.steps - 1:
                losses = " ".join(f"{k} {rosenbrock(v[-1]):.2e}" for k, v in paths.items())
                log(f"step {step + 1:5d}  f: {losses}")
        for session in sessions.values():
            session.delete()
    elapsed = time.perf_counter() - t0

    fig = plt.figure(figsize=(17, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 4, width_ratios=(1, 1, 1, 1.5))
    gx, gy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
    gz = (1 - gx) ** 2 + 100 * (gy - gx**2) ** 2 + 1e-3
    loss_ax = fig.add_subplot(grid[:, 3])
    every_k = max(1, args.steps // 20)
    final = {}
    for i, (label, path) in enumerate(paths.items()):
        arr = np.array(path)
        final[label] = rosenbrock(arr[-1])
        color = f"C{i}"
        ax = fig.add_subplot(grid[i // 3, i % 3])
        ax.contourf(
            gx, gy, gz, levels=np.logspace(-3, 3.5, 27), norm=LogNorm(), cmap="bone", alpha=0.45
        )
        ax.plot(arr[:, 0], arr[:, 1], color=color, lw=1.2)
        ax.plot(arr[::every_k, 0], arr[::every_k, 1], "o", color=color, ms=3.5)
        ax.plot(*START, "k^", ms=8)
        ax.plot(1, 1, "r*", ms=12)
        lr = OPTIMIZERS[label][1]["lr"]
        ax.set(xlim=(-2, 2), ylim=(-1, 3), title=f"{label} (lr {lr:g}): f = {final[label]:.1e}")
        ax.set_xlabel("x", labelpad=0)
        ax.set_ylabel("y", labelpad=0)
        losses = np.maximum([rosenbrock(p) for p in arr], FLOOR)
        loss_ax.plot(losses, color=color, lw=1.2, label=f"{label} lr={lr:g}")
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="step", ylabel=f"f(x, y) (log, floored at {FLOOR:g})", title="Loss")
    loss_ax.legend(fontsize=9)
    fig.suptitle(
        f"Rosenbrock on optd: one session per optimizer, {args.steps} steps from (-1.5, 2) "
        f"(triangle) to (1, 1) (star), a dot every {every_k} steps; grad norm clipped to {CLIP:g}"
    )
    save(fig, args.out)
    log("final f: " + ", ".join(f"{k} {v:.2e}" for k, v in final.items()) + f"; {elapsed:.1f} s")
    Progress.summary(
        initial_loss=rosenbrock(start),
        final_loss=min(final.values()),
        final=final,
        points={k: v[-1].tolist() for k, v in paths.items()},
        seconds=elapsed,
    )


if __name__ == "__main__":
    main()
