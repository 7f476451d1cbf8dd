"""The seed's Gaussian-mixture loss surface, with trajectories for several optimizers.

f(p) = -sum_i 0.25 N(p; mu_i, S), mu_i = (+-2, +-2), S = [[1, .5], [.5, 1]]: four
wells with gradients below 0.02 everywhere, where an adaptive step size matters.
The seed's optimizers (Adam, AdamW, RAdam, AdaBelief at lr 0.01, from (3, 3)) plus
Lion (lr 0.003; its step is exactly lr per coordinate) and SGD with momentum (lr 1). Each
(optimizer, start) pair is its own optd session holding the 2-D point; a second
start, (-0.3, 0.8), sits between the wells.

    python examples/gaussian_mixture.py [--url URL] [--steps 1000]
"""

from __future__ import annotations

import time

import numpy as np
from _common import Progress, every, parser, plt, save
from _server import optd_server
from optd_client import Client

MEANS = np.array([[-2.0, -2.0], [2.0, 2.0], [-2.0, 2.0], [2.0, -2.0]])
COV_INV = np.linalg.inv(np.array([[1.0, 0.5], [0.5, 1.0]]))
NORM = 0.25 * np.sqrt(np.linalg.det(COV_INV)) / (2 * np.pi)  # weight x density constant
STARTS = {"A": (3.0, 3.0), "B": (-0.3, 0.8)}
OPTIMIZERS = {
    "Adam": ("adam", {"lr": 0.01}),
    "AdamW": ("adamw", {"lr": 0.01}),
    "RAdam": ("radam", {"lr": 0.01}),
    "AdaBelief": ("adabelief", {"lr": 0.01}),
    "Lion": ("lion", {"lr": 0.003}),
    "SGD+momentum": ("sgd", {"lr": 1.0, "momentum": 0.9}),
}
FLOOR = 1e-16


def densities(p: np.ndarray) -> np.ndarray:
    d = p - MEANS
    return NORM * np.exp(-0.5 * np.einsum("ni,ij,nj->n", d, COV_INV, d))


def objective(p: np.ndarray) -> float:
    return -float(densities(p).sum())


def gradient(p: np.ndarray) -> np.ndarray:
    return (densities(p)[:, None] * ((p - MEANS) @ COV_INV)).sum(axis=0)


def best_value() -> float:
    """The global minimum: with equal covariances a stationary point satisfies
    p = sum_i w_i(p) mu_i / sum_i w_i(p), so this mean-shift iteration finds each mode."""
    values = []
    for p in MEANS.copy():
        for _ in range(200):
            w = densities(p)
            p = (w[:, None] * MEANS).sum(axis=0) / w.sum()
        values.append(objective(p))
    return min(values)


def main() -> None:
    args = parser("gaussian_mixture", __doc__, steps=1000, seed=False).parse_args()
    log = Progress(args.quiet)
    t0 = time.perf_counter()
    runs = [(label, key) for key in STARTS for label in OPTIMIZERS]
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        sessions, paths = {}, {}
        for label, key in runs:
            name, hp = OPTIMIZERS[label]
            start = np.array(STARTS[key])
            sessions[label, key] = client.create_session(name, {"p": start}, dtype="float64", **hp)
            paths[label, key] = [start]
        for step in range(args.steps):
            for run, session in sessions.items():
                p = paths[run][-1]
                paths[run].append(session.step({"p": gradient(p)}, loss=objective(p))["p"])
            if step % every(args.steps) == 0 or step == args.steps - 1:
                parts = " ".join(f"{lab}/{k} {objective(paths[lab, k][-1]):.5f}" for lab, k in runs)
                log(f"step {step + 1:5d}  f: {parts}")
        for session in sessions.values():
            session.delete()
    elapsed = time.perf_counter() - t0
    f_star = best_value()

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.8), layout="constrained")
    gx, gy = np.meshgrid(np.linspace(-4.5, 4.5, 250), np.linspace(-4.5, 4.5, 250))
    gz = np.vectorize(lambda a, b: objective(np.array([a, b])))(gx, gy)
    final = {}
    for ax, (key, start) in zip(axes[:2], STARTS.items(), strict=True):
        filled = ax.contourf(gx, gy, gz, levels=25, cmap="Greys", alpha=0.6)
        ax.contour(gx, gy, gz, levels=25, colors="k", linewidths=0.3, alpha=0.4)
        for i, label in enumerate(OPTIMIZERS):
            arr = np.array(paths[label, key])
            final[f"{label}/{key}"] = objective(arr[-1])
            ax.plot(arr[:, 0], arr[:, 1], color=f"C{i}", lw=2.2 - 0.25 * i, label=label)
            ax.plot(arr[::50, 0], arr[::50, 1], ".", color=f"C{i}", ms=5)
            ax.plot(*arr[-1], "o", color=f"C{i}", mec="w", ms=7)
        ax.plot(*start, "y^", mec="k", ms=11, label=f"start {start}")
        ax.set(xlabel="x", ylabel="y", aspect="equal")
        if key == "B":  # zoom in on the paths
            ax.set(xlim=(-1.0, 3.0), ylim=(-0.5, 3.0))
        ax.set_title(f"Start {key} = {start}: trajectories (a dot every 50 steps)")
        ax.legend(loc="lower left", fontsize=8)
    fig.colorbar(filled, ax=axes[1], shrink=0.8, label="f(x, y)")
    for i, label in enumerate(OPTIMIZERS):
        for key, style in zip(STARTS, ("-", "--"), strict=True):
            gap = [max(objective(p) - f_star, FLOOR) for p in paths[label, key]]
            name = f"{label} lr={OPTIMIZERS[label][1]['lr']:g}" if key == "A" else None
            axes[2].plot(gap, style, color=f"C{i}", lw=1.3, label=name)
    axes[2].plot([], [], "k-", label="start A")
    axes[2].plot([], [], "k--", label="start B")
    axes[2].set_yscale("log")
    axes[2].set(xlabel="step", ylabel=f"f - f* (log, f* = {f_star:.6f}, floored at {FLOOR:g})")
    axes[2].set_title("Loss gap to the global minimum")
    axes[2].legend(fontsize=8)
    fig.suptitle("Gaussian-mixture loss surface on optd: one session per optimizer and start")
    save(fig, args.out)
    log("final f: " + ", ".join(f"{k} {v:.6f}" for k, v in final.items()) + f"; {elapsed:.1f} s")
    Progress.summary(
        initial_loss=objective(np.array(STARTS["A"])),
        final_loss=final["Adam/A"],
        f_star=f_star,
        final=final,
        points={f"{lab}/{k}": paths[lab, k][-1].tolist() for lab, k in runs},
        seconds=elapsed,
    )


if __name__ == "__main__":
    main()
