"""The Adam paper's bias-correction ablation (section 6.4, figure 4) at small scale.

A variational auto-encoder (64-128-8 / 8-128-64) on scikit-learn's 8x8 digits,
trained with Adam (beta1 = 0.9) through `RemoteOptimizer` for beta2 in {0.99, 0.999,
0.9999}, a range of step sizes, with and without the bias correction (the server's
`bias_correction` hyperparameter). Without it, the first steps are
(1 - beta1^t) / sqrt(1 - beta2^t) times larger — 10x at beta2 = 0.9999 — so beta2
close to 1 with large steps becomes unstable, most visibly early in training.

    python examples/adam_bias_correction.py [--url URL] [--epochs 20]
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from _common import Progress, digits, parser, plt, save
from _server import optd_server
from _training import as_tensors
from optd_client import Client, InvalidTensorError
from optd_client.torch import RemoteOptimizer
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

BETA2 = (0.99, 0.999, 0.9999)
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
BATCH = 64
LATENT = 8


class VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 2 * LATENT))
        self.dec = nn.Sequential(nn.Linear(LATENT, 128), nn.Tanh(), nn.Linear(128, 64))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative ELBO per image, in nats (Bernoulli decoder, standard normal prior)."""
        mu, logvar = self.enc(x).chunk(2, dim=1)
        eps = torch.randn(mu.shape, generator=generator)
        z = mu + eps * torch.exp(0.5 * logvar)
        rec = binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (rec + kl) / len(x)


def train(
    client: Client,
    x: torch.Tensor,
    beta2: float,
    lr: float,
    corrected: bool,
    epochs: int,
    early: int,
    seed: int,
) -> tuple[float, float]:
    """The training loss after `early` and after `epochs` epochs (nan once diverged)."""
    torch.manual_seed(seed)
    vae = VAE()
    opt = RemoteOptimizer(
        vae.named_parameters(), client, "adam", lr=lr, betas=(0.9, beta2), bias_correction=corrected
    )
    rng = np.random.default_rng(seed)
    at = {}
    try:
        for epoch in range(1, epochs + 1):
            for idx in np.array_split(rng.permutation(len(x)), len(x) // BATCH):
                opt.zero_grad()
                loss = vae.loss(x[torch.from_numpy(idx)])
                if not math.isfinite(loss.item()):
                    raise FloatingPointError
                loss.backward()
                opt.step()
            if epoch in (early, epochs):
                with torch.no_grad():  # the same noise for every evaluation
                    value = vae.loss(x, torch.Generator().manual_seed(0)).item()
                at[epoch] = value if math.isfinite(value) else math.nan
    except (FloatingPointError, InvalidTensorError):  # the server refuses non-finite grads
        pass
    finally:
        opt.session.delete()
    return at.get(early, math.nan), at.get(epochs, math.nan)


def main() -> None:
    p = parser("adam_bias_correction", __doc__, epochs=20)
    p.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in LRS), help="step sizes")
    args = p.parse_args()
    lrs = [float(v) for v in args.lrs.split(",")]
    log = Progress(args.quiet)
    early = max(1, args.epochs // 10)
    x = as_tensors(digits(args.seed)[0])[0]
    t0 = time.perf_counter()
    results: dict[tuple[float, bool], list[tuple[float, float]]] = {}
    with optd_server(args.url, quiet=args.quiet) as url, Client(url) as client:
        for beta2 in BETA2:
            for corrected in (True, False):
                row = []
                for lr in lrs:
                    row.append(
                        train(client, x, beta2, lr, corrected, args.epochs, early, args.seed)
                    )
                    log(
                        f"beta2 {beta2:<6g} bias_correction {corrected!s:5s} lr {lr:<6g} "
                        f"loss after {early} epochs {row[-1][0]:8.3f}, "
                        f"after {args.epochs} {row[-1][1]:8.3f}"
                    )
                results[beta2, corrected] = row
    elapsed = time.perf_counter() - t0

    fig, axes = plt.subplots(2, len(BETA2), figsize=(14, 7.5), sharex=True, layout="constrained")
    finite = [v for row in results.values() for pair in row for v in pair if math.isfinite(v)]
    top = min(max(finite), 2 * float(np.median(finite)))
    for col, beta2 in enumerate(BETA2):
        for row_i, when in enumerate((early, args.epochs)):
            ax = axes[row_i, col]
            for corrected, color in ((True, "tab:red"), (False, "tab:green")):
                values = np.array([pair[row_i] for pair in results[beta2, corrected]])
                shown = np.where(np.isnan(values), top, np.minimum(values, top))
                label = "with bias correction" if corrected else "without"
                ax.plot(lrs, shown, "o-", color=color, label=label)
                off = np.isnan(values) | (values > top)
                ax.plot(np.array(lrs)[off], shown[off], "kx", ms=10, mew=2)
                for lr, value in zip(np.array(lrs)[off], values[off], strict=True):
                    text = "diverged" if np.isnan(value) else f"{value:.0f}"
                    ax.annotate(
                        text,
                        (lr, top),
                        textcoords="offset points",
                        xytext=(-8, -16),
                        ha="right",
                        fontsize=9,
                    )
            ax.set_xscale("log")
            ax.set_ylim(top=top * 1.05)
            ax.set_title(f"beta1 = 0.9, beta2 = {beta2:g}, after {when} epochs", fontsize=10)
            if row_i == 1:
                ax.set_xlabel("step size (lr)")
            if col == 0:
                ax.set_ylabel("training loss (neg. ELBO, nats)")
    axes[0, 0].plot([], [], "kx", ms=10, mew=2, label="off the scale (value written)")
    axes[0, 0].legend(fontsize=9)
    steps = len(x) // BATCH
    fig.suptitle(
        f"Adam paper, figure 4 at small scale: VAE on digits, {steps} steps per epoch, "
        "red = bias-corrected, green = not"
    )
    save(fig, args.out)
    table = {f"{b}/{'bc' if c else 'nobc'}": row for (b, c), row in results.items()}
    log(f"{elapsed:.1f} s")
    best = min(v[1] for v in results[0.999, True] if math.isfinite(v[1]))
    torch.manual_seed(args.seed)
    with torch.no_grad():
        initial = VAE().loss(x, torch.Generator().manual_seed(0)).item()
    Progress.summary(initial_loss=initial, final_loss=best, lrs=lrs, results=table, seconds=elapsed)


if __name__ == "__main__":
    main()
