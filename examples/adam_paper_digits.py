"""The Adam paper's experiments 6.1 and 6.2 at small scale, on scikit-learn's digits.

Logistic regression (convex; as in the paper every optimizer's step size decays as
lr / sqrt(t): the session's `inverse_sqrt` schedule) and a multi-layer network with
two hidden layers of 256 ReLU units (the paper: 1000; no dropout, like its figure
2b), minibatches of 128, comparing Adam, SGD with Nesterov momentum, AdaGrad and
RMSProp. Training is through `optd_client.torch.RemoteOptimizer`; the digits ship
with scikit-learn (1437 training / 360 test images, nothing is downloaded).

    python examples/adam_paper_digits.py [--url URL] [--epochs 30]
"""

from __future__ import annotations

import time

import torch
from _common import Progress, digits, parser, plt, save
from _server import optd_server
from _training import as_tensors, fit
from optd_client import Client
from optd_client.torch import RemoteOptimizer
from torch import nn

# label -> (optimizer, hyperparameters), per model. As in the paper, each step size is
# the best of a grid (1e-3, 3e-3, ..., 3, 10): the lowest mean log training cost over
# 30 epochs (fast and stable), seed 0.
OPTIMIZERS = {
    "logistic": {
        "Adam": ("adam", {"lr": 0.3}),
        "SGD Nesterov": ("sgd", {"lr": 3.0, "momentum": 0.9, "nesterov": True}),
        "AdaGrad": ("adagrad", {"lr": 1.0}),
        "RMSProp": ("rmsprop", {"lr": 0.1}),
    },
    "mlp": {
        "Adam": ("adam", {"lr": 0.01}),
        "SGD Nesterov": ("sgd", {"lr": 0.3, "momentum": 0.9, "nesterov": True}),
        "AdaGrad": ("adagrad", {"lr": 0.1}),
        "RMSProp": ("rmsprop", {"lr": 0.003}),
    },
}
# the paper's settings: L2-regularised logistic regression with lr / sqrt(t) decay
EXTRA = {"logistic": {"weight_decay": 1e-3, "schedule": {"name": "inverse_sqrt"}}, "mlp": {}}
TITLES = {
    "logistic": "L2-regularised logistic regression, lr / sqrt(t)",
    "mlp": "MLP 64-256-256-10, ReLU",
}


def model(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "logistic":
        return nn.Linear(64, 10)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def main() -> None:
    args = parser("adam_paper_digits", __doc__, epochs=30).parse_args()
    log = Progress(args.quiet)
    data = as_tensors(*digits(args.seed))
    t0 = time.perf_counter()
    results = {}
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        for kind, optimizers in OPTIMIZERS.items():
            for label, (name, hp) in optimizers.items():
                net = model(kind, args.seed)
                opt = RemoteOptimizer(net.named_parameters(), client, name, **hp, **EXTRA[kind])

                def report(epoch: int, h, kind=kind, label=label) -> None:
                    if epoch % max(1, args.epochs // 5) == 0 or epoch == args.epochs:
                        log(
                            f"{kind:8s} {label:12s} epoch {epoch:3d}  train cost "
                            f"{h.epoch_loss[-1]:.4f}  test acc {h.test_acc[-1]:.3f}"
                        )

                l2 = EXTRA[kind].get("weight_decay", 0.0)
                hist = fit(
                    net,
                    opt,
                    data,
                    epochs=args.epochs,
                    batch_size=128,
                    seed=args.seed,
                    l2=l2,
                    on_epoch=report,
                )
                results[kind, label] = hist
                opt.session.delete()
    elapsed = time.perf_counter() - t0

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for ax, (kind, optimizers) in zip(axes, OPTIMIZERS.items(), strict=True):
        for i, (label, (_, hp)) in enumerate(optimizers.items()):
            h = results[kind, label]
            ax.plot(
                range(len(h.epoch_loss)),
                h.epoch_loss,
                color=f"C{i}",
                marker=".",
                ms=4,
                label=f"{label} lr={hp['lr']:g}: test acc {h.test_acc[-1]:.3f}",
            )
        ax.set_yscale("log")
        cost = "NLL + L2 penalty" if kind == "logistic" else "NLL"
        ax.set(xlabel="epoch (11 minibatches of ~130)", ylabel=f"training cost: {cost} (log)")
        ax.set_title(TITLES[kind])
        ax.legend(fontsize=9)
    fig.suptitle("Adam paper, figures 1 and 2 at small scale: digits 8x8, training cost")
    save(fig, args.out)
    final = {f"{k}/{lab}": (h.epoch_loss[-1], h.test_acc[-1]) for (k, lab), h in results.items()}
    log("final (train cost, test acc): " + str(final) + f"; {elapsed:.1f} s")
    adam = results["mlp", "Adam"]
    Progress.summary(
        initial_loss=adam.epoch_loss[0],
        final_loss=adam.epoch_loss[-1],
        final={k: {"train_cost": v[0], "test_acc": v[1]} for k, v in final.items()},
        seconds=elapsed,
    )


if __name__ == "__main__":
    main()
