"""What every example shares: its command line, progress lines, the digits data, the PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"


def parser(
    name: str,
    doc: str | None,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    seed: bool = True,
) -> argparse.ArgumentParser:
    """`--url`, `--out`, `--quiet`, `--steps` / `--epochs` with these defaults, `--seed`."""
    p = argparse.ArgumentParser(
        prog=f"python examples/{name}.py",
        description=(doc or "").strip().splitlines()[0] if doc else None,
    )
    p.add_argument("--url", help="an optd server to use (default: start an embedded one)")
    if steps is not None:
        p.add_argument("--steps", type=int, default=steps, help=f"steps (default {steps})")
    if epochs is not None:
        p.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default {epochs})")
    p.add_argument("--out", type=Path, default=IMAGES / f"{name}.png", help="the PNG to write")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


class Progress:
    """Prints progress lines unless `quiet`; the summary line is always printed."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, *parts: Any) -> None:
        if not self.quiet:
            print(*parts, flush=True)

    @staticmethod
    def summary(**values: Any) -> None:
        """One machine-readable line (`summary {...}`) that the smoke tests read."""
        print("summary", json.dumps(values, default=float), flush=True)


def every(total: int, lines: int = 10) -> int:
    """Print every this many steps to get about `lines` progress lines."""
    return max(1, total // lines)


def save(fig: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}", flush=True)


def digits(seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package: no download),
    pixels scaled to [0, 1], split into train and test: x_train, y_train, x_test, y_test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def batches(n: int, size: int, rng: np.random.Generator):
    """Index arrays of one shuffled epoch."""
    order = rng.permutation(n)
    for i in range(0, n, size):
        yield order[i : i + size]
