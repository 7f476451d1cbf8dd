"""The seed's two-layer network, trained through the PyTorch adapter (`RemoteOptimizer`).

Synthetic classification as in the seed: x ~ N(0, I) in 10 dimensions, label
sum(x) > 0; a 10-5-1 network (ReLU, sigmoid output, weights 0.01 * N(0, 1)), full
batch, binary cross-entropy. `RemoteOptimizer` is a `torch.optim.Optimizer` whose
state lives in an optd session: `opt.step()` sends the `.grad`s and copies the new
parameters into the model. Adam at the seed's lr 1e-3 and at 1e-2.

    python examples/two_layer_net.py [--url URL] [--epochs 1000]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import Progress, every, parser, plt, save
from _server import optd_server
from optd_client import Client
from optd_client.torch import RemoteOptimizer
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

LRS = (1e-3, 1e-2)
# Tiny tensors: a second intra-op thread only fights the server for the CPU (5x slower).
torch.set_num_threads(1)


def data(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.float32).reshape(-1, 1)
    return torch.from_numpy(x), torch.from_numpy(y)


def network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1))  # sigmoid in the loss
    with torch.no_grad():  # the seed's initialisation
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.01 if p.dim() == 2 else torch.zeros_like(p))
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) > 0).float() == y).float().mean())


def main() -> None:
    args = parser("two_layer_net", __doc__, epochs=1000).parse_args()
    log = Progress(args.quiet)
    rng = np.random.default_rng(args.seed)
    x, y = data(rng, 1000)
    x_test, y_test = data(rng, 1000)
    t0 = time.perf_counter()
    hist: dict[float, dict[str, list[float]]] = {}
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        runs = []
        for lr in LRS:
            model = network(args.seed)
            opt = RemoteOptimizer(model.named_parameters(), client, "adam", lr=lr)
            log(f"lr {lr:g}: session {opt.session.id}")
            runs.append((lr, model, opt))
            hist[lr] = {"loss": [], "train": [], "test": []}
        for epoch in range(args.epochs):
            for lr, model, opt in runs:
                opt.zero_grad()
                loss = bce(model(x), y)
                loss.backward()
                opt.step()  # the update happens on the server
                h = hist[lr]
                h["loss"].append(loss.item())
                h["train"].append(accuracy(model, x, y))
                h["test"].append(accuracy(model, x_test, y_test))
            if epoch % every(args.epochs) == 0 or epoch == args.epochs - 1:
                parts = [
                    f"lr {lr:g}: loss {hist[lr]['loss'][-1]:.4f} acc {hist[lr]['train'][-1]:.3f}"
                    for lr, _, _ in runs
                ]
                log(f"epoch {epoch:4d}  " + "  ".join(parts))
        for _, _, opt in runs:
            opt.session.delete()
    elapsed = time.perf_counter() - t0

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for lr, h in hist.items():
        (line,) = ax1.plot(h["loss"], label=f"Adam lr={lr:g}")
        ax2.plot(h["train"], color=line.get_color(), label=f"lr={lr:g} train")
        ax2.plot(h["test"], color=line.get_color(), ls="--", label=f"lr={lr:g} test")
    ax1.set_yscale("log")
    ax1.set(xlabel="epoch (full batch)", ylabel="binary cross-entropy (log)", title="Training loss")
    ax1.legend()
    ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (1000 train / 1000 test)")
    ax2.set_ylim(0.4, 1.01)
    ax2.legend(loc="lower right")
    fig.suptitle("Two-layer network (10-5-1) with optd_client.torch.RemoteOptimizer")
    save(fig, args.out)
    final = {f"{lr:g}": {k: v[-1] for k, v in h.items()} for lr, h in hist.items()}
    log(f"final: {final}; {elapsed:.1f} s")
    Progress.summary(
        initial_loss=hist[LRS[-1]]["loss"][0],
        final_loss=hist[LRS[-1]]["loss"][-1],
        final=final,
        seconds=elapsed,
    )


if __name__ == "__main__":
    main()
