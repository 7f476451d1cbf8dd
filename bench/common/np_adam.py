"""The Adam step the peers run: plain in-place numpy on one array, as torch.optim.Adam defines
it (no weight decay, no amsgrad). The Ray actor parameter server, the naive JSON server and the
`numpy Adam` floor of bench/peers/run.py all call this one function, so their arithmetic is
the same and only what is around it differs.

In place where numpy makes it easy (m, v, p are updated in their own buffers), with the few
temporaries a reasonable hand-written version has - not a strawman, not optd's chunked kernel.
"""

from __future__ import annotations

import math

import numpy as np

LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


def adam_step(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    lr: float = LR,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
) -> None:
    """One Adam step at step count t (1-based) on float32 arrays, in place."""
    b1, b2 = betas
    m *= b1
    m += (1.0 - b1) * g
    v *= b2
    v += (1.0 - b2) * (g * g)
    denom = np.sqrt(v)
    denom /= math.sqrt(1.0 - b2**t)
    denom += eps
    p -= (lr / (1.0 - b1**t)) * (m / denom)
