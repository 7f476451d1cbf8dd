"""The minibatch loop the PyTorch examples share; updates happen in the optd session
behind `RemoteOptimizer`, never locally."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.functional import cross_entropy

# Small tensors: a second intra-op thread only fights the server for the CPU (5x slower
# on a 2-core machine).
torch.set_num_threads(1)


@dataclass
class History:
    iteration_loss: list[float] = field(default_factory=list)  # minibatch loss per step
    epoch_loss: list[float] = field(default_factory=list)  # full training set, epoch 0..E
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy (negative log likelihood) and accuracy."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(cross_entropy(logits, y))
        acc = float((logits.argmax(dim=1) == y).float().mean())
    model.train()
    return loss, acc


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, ...],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    l2: float = 0.0,
    on_epoch: Callable[[int, History], None] | None = None,
) -> History:
    """Minibatch training with cross-entropy; the same `seed` gives the same batches.
    `epoch_loss` is the training cost on the full set: the NLL plus l2/2 * |params|^2
    (the objective an optimizer's `weight_decay=l2` minimises)."""
    x, y, x_test, y_test = data
    rng = np.random.default_rng(seed)
    hist = History()
    t0 = time.perf_counter()

    def cost() -> float:
        penalty = sum(float((p.detach() ** 2).sum()) for p in model.parameters())
        return evaluate(model, x, y)[0] + 0.5 * l2 * penalty

    hist.epoch_loss.append(cost())
    hist.test_acc.append(evaluate(model, x_test, y_test)[1])
    for epoch in range(1, epochs + 1):
        for idx in np.array_split(rng.permutation(len(y)), max(1, len(y) // batch_size)):
            index = torch.from_numpy(idx)
            opt.zero_grad()
            loss = cross_entropy(model(x[index]), y[index])
            loss.backward()
            opt.step()  # gradients go to the optd session, new parameters come back
            hist.iteration_loss.append(loss.item())
        hist.epoch_loss.append(cost())
        hist.test_acc.append(evaluate(model, x_test, y_test)[1])
        if on_epoch is not None:
            on_epoch(epoch, hist)
    hist.seconds = time.perf_counter() - t0
    return hist


def as_tensors(*arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
