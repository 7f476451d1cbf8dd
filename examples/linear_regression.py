"""Linear regression trained remotely: the seed's `make_regression` setup, Adam on the server.

The client computes the gradient of the mean squared error; the optd server keeps
Adam's moments and returns the new `w` and `b` after every step. Three sessions run
side by side with learning rates 0.01 (the seed's), 0.1 and 1.0.

    python examples/linear_regression.py            # starts its own server
    python examples/linear_regression.py --url http://127.0.0.1:8000 --steps 300
"""

from __future__ import annotations

import time

import numpy as np
from _common import Progress, every, parser, plt, save
from _server import optd_server
from optd_client import Client
from sklearn.datasets import make_regression

LRS = (0.01, 0.1, 1.0)


def main() -> None:
    args = parser("linear_regression", __doc__, steps=300).parse_args()
    log = Progress(args.quiet)
    x, y, coef = make_regression(
        n_samples=1000, n_features=1, noise=0.1, random_state=42, coef=True
    )
    y = y.reshape(-1, 1)
    w0 = np.random.default_rng(args.seed).standard_normal((1, 1))  # as the seed: w ~ N(0, 1)
    t0 = time.perf_counter()
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        runs = {}
        for lr in LRS:
            session = client.create_session(
                "adam", {"w": w0, "b": np.zeros(1)}, lr=lr, dtype="float64"
            )
            runs[lr] = {"session": session, "w": w0.copy(), "b": np.zeros(1), "loss": []}
        for step in range(args.steps):
            for run in runs.values():
                err = x @ run["w"] + run["b"] - y
                loss = float(np.mean(err**2))
                run["loss"].append(loss)
                grads = {"w": 2 * x.T @ err / len(y), "b": 2 * err.mean(axis=0)}
                new = run["session"].step(grads, loss=loss)
                run["w"], run["b"] = new["w"], new["b"]
            if step % every(args.steps) == 0 or step == args.steps - 1:
                losses = "  ".join(
                    f"lr {lr:g}: {run['loss'][-1]:10.4f}" for lr, run in runs.items()
                )
                log(f"step {step:4d}  mse  {losses}")
        for run in runs.values():  # the loss at the final parameters
            run["loss"].append(float(np.mean((x @ run["w"] + run["b"] - y) ** 2)))
            run["session"].delete()
    elapsed = time.perf_counter() - t0

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for lr, run in runs.items():
        ax1.plot(run["loss"], label=f"Adam lr={lr:g}" + (" (the seed's)" if lr == 0.01 else ""))
    ax1.axhline(0.01, color="grey", ls=":", lw=1, label="noise variance (0.1²)")
    ax1.set_yscale("log")
    ax1.set(xlabel="step", ylabel="mean squared error (log)", title="Training loss")
    ax1.legend()
    ax2.scatter(x[:, 0], y[:, 0], s=5, color="grey", alpha=0.5, label="data (1000 samples)")
    grid = np.linspace(x.min(), x.max(), 2)
    for lr, run in runs.items():
        w, b = float(run["w"][0, 0]), float(run["b"][0])
        ax2.plot(grid, w * grid + b, lw=1.5, label=f"lr={lr:g}: y = {w:.2f}x + {b:.2f}")
    ax2.set(
        xlabel="x", ylabel="y", title=f"Fitted lines after {args.steps} steps (true w={coef:.2f})"
    )
    ax2.legend()
    fig.suptitle("Linear regression (make_regression) with Adam on the optd server")
    save(fig, args.out)
    finals = {f"{lr:g}": run["loss"][-1] for lr, run in runs.items()}
    log(f"final mse by lr: {finals}; true w = {coef:.3f}; {elapsed:.1f} s")
    Progress.summary(
        initial_loss=runs[1.0]["loss"][0],
        final_loss=runs[1.0]["loss"][-1],
        final_loss_by_lr=finals,
        w={f"{lr:g}": float(run["w"][0, 0]) for lr, run in runs.items()},
        seconds=elapsed,
    )


if __name__ == "__main__":
    main()
