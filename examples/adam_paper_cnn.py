"""A small CNN on the 8x8 digits trained with RAdam through the PyTorch adapter — the
Adam paper's CNN experiment (section 6.3, figure 3) at small scale.

conv 3x3 16 - conv 3x3 32 - max-pool 2 - dense 64 - 10 (ReLU), minibatches of 128,
on scikit-learn's digits (shipped with the package). RAdam (its rectification
replaces a warmup) against the paper's Adam, AdaGrad and SGD with Nesterov momentum;
every update is made by the optd server behind `RemoteOptimizer`. Left: the training
cost per iteration over the first 3 epochs; right: per epoch.

    python examples/adam_paper_cnn.py [--url URL] [--epochs 20]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import Progress, digits, parser, plt, save
from _server import optd_server
from _training import as_tensors, fit
from optd_client import Client
from optd_client.torch import RemoteOptimizer
from torch import nn

# Step sizes: the best final training NLL after 20 epochs on the grid 1e-3, 3e-3, ..., 0.1.
OPTIMIZERS = {
    "RAdam": ("radam", {"lr": 0.03}),
    "Adam": ("adam", {"lr": 0.01}),
    "AdaGrad": ("adagrad", {"lr": 0.1}),
    "SGD Nesterov": ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
}


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)))


def smooth(values: list[float], k: int = 5) -> np.ndarray:
    v = np.asarray(values)
    return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) >= k else v


def main() -> None:
    args = parser("adam_paper_cnn", __doc__, epochs=20).parse_args()
    log = Progress(args.quiet)
    data = as_tensors(*digits(args.seed))
    t0 = time.perf_counter()
    results = {}
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        for label, (name, hp) in OPTIMIZERS.items():
            torch.manual_seed(args.seed)
            net = SmallCNN()
            opt = RemoteOptimizer(net.named_parameters(), client, name, **hp)
            n_params = sum(p.numel() for p in net.parameters())
            log(f"{label}: session {opt.session.id}, {n_params} parameters")

            def report(epoch: int, h, label=label) -> None:
                if epoch % max(1, args.epochs // 5) == 0 or epoch == args.epochs:
                    log(
                        f"{label:12s} epoch {epoch:3d}  train nll {h.epoch_loss[-1]:.4f}  "
                        f"test acc {h.test_acc[-1]:.3f}"
                    )

            results[label] = fit(
                net, opt, data, epochs=args.epochs, batch_size=128, seed=args.seed, on_epoch=report
            )
            opt.session.delete()
    elapsed = time.perf_counter() - t0

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    steps_per_epoch = len(results["RAdam"].iteration_loss) // args.epochs
    first = 3 * steps_per_epoch
    for i, (label, h) in enumerate(results.items()):
        lr = OPTIMIZERS[label][1]["lr"]
        ax1.plot(h.iteration_loss[:first], color=f"C{i}", lw=1.3, label=f"{label} lr={lr:g}")
        ax2.plot(
            h.epoch_loss,
            color=f"C{i}",
            marker=".",
            ms=4,
            label=f"{label}: test acc {h.test_acc[-1]:.3f}",
        )
    for e in range(1, 3):
        ax1.axvline(e * steps_per_epoch, color="grey", lw=0.6, ls=":")
    ax1.set_yscale("log")
    ax1.set(xlabel=f"iteration ({steps_per_epoch} per epoch)", ylabel="minibatch NLL (log)")
    ax1.set_title("First 3 epochs")
    ax1.legend()
    ax2.set_yscale("log")
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set(xlabel="epoch", ylabel="training NLL, full set (log)", title=f"{args.epochs} epochs")
    ax2.legend()
    fig.suptitle("Adam paper, figure 3 at small scale: CNN on digits 8x8 via RemoteOptimizer")
    save(fig, args.out)
    final = {
        k: {"train_nll": h.epoch_loss[-1], "test_acc": h.test_acc[-1]} for k, h in results.items()
    }
    log(f"final: {final}; {elapsed:.1f} s")
    Progress.summary(
        initial_loss=results["RAdam"].epoch_loss[0],
        final_loss=results["RAdam"].epoch_loss[-1],
        final=final,
        seconds=elapsed,
    )


if __name__ == "__main__":
    main()
