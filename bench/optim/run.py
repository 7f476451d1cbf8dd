"""Step time of optd's numpy Adam against torch's foreach and fused Adam, float32.

Run: `python -m bench.optim` (writes the `## Optimizer math` section of bench/RESULTS.md)
or `python -m bench.optim --quick` (a CI smoke run in well under 30 s; prints only,
unless --write). Every cell is the median of N repeats, with the methods interleaved (and their
order rotated) inside each repeat so that drift in the machine hits them all alike.

Columns: `update` is the optimizer object's in-place `update` on the flat arrays (the math
alone; the gradient is copied into its scratch buffer outside the timed region, because update
clobbers it); `LocalOptimizer.step` is the whole in-process pipeline (gradient assembly, norm,
schedule, update). torch's times are `optimizer.step()` with the gradients already in `.grad`.

torch runs on one intra-op thread by default (`--torch-threads`): numpy's ufuncs use one core,
and on the 2-vCPU reference VM a second torch thread made the interleaved timings bimodal —
once numpy had run for a few ms between torch calls, torch's idle worker had to be woken for
every parallel region, and foreach Adam on one 1e6 tensor went from 1.5 ms to 45 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.optim import get_optimizer
from app.optim.local import LocalOptimizer
from bench.common.harness import ROOT
from bench.common.report import RESULTS, write_section

try:
    import torch
except ImportError:  # the torch columns are skipped
    torch = None  # type: ignore[assignment]

SECTION = "## Optimizer math (python -m bench.optim)"
# (total parameters, number of tensors, repeats, quick repeats; 0 quick repeats = skip in quick)
CELLS = [
    (1_000, 1, 300, 50),
    (100_000, 1, 100, 20),
    (1_000_000, 1, 30, 7),
    (1_000_000, 200, 30, 7),
    (10_000_000, 1, 9, 0),
]


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


Method = tuple[Callable[[], Any] | None, Callable[[], Any]]  # (untimed preparation, step)


def make_methods(n: int, parts: int, rng: np.random.Generator) -> dict[str, Method]:
    """One zero-argument step function per method, all on the same float32 problem."""
    sizes = split(n, parts)
    p0 = rng.standard_normal(n).astype(np.float32)
    g0 = rng.standard_normal(n).astype(np.float32) * np.float32(0.1)
    methods: dict[str, Method] = {}

    adam = get_optimizer("adam")
    hp = adam.validate({})
    param, scratch = p0.copy(), np.empty_like(g0)
    slots = {s: np.zeros_like(p0) for s in adam.slot_names(hp)}
    step = [0]

    def update() -> None:
        step[0] += 1
        adam.update(param, scratch, slots, step[0], hp.lr, hp)

    methods["update"] = (lambda: np.copyto(scratch, g0), update)

    names = [f"t{i}" for i in range(parts)]
    offsets = np.cumsum([0, *sizes])
    params = {k: p0[offsets[i] : offsets[i + 1]] for i, k in enumerate(names)}
    grads = {k: g0[offsets[i] : offsets[i + 1]] for i, k in enumerate(names)}
    lo = LocalOptimizer("adam", params=params, dtype="float32", check_finite=False)
    methods["LocalOptimizer.step"] = (None, lambda: lo.step(grads))

    if torch is not None:
        for kind in ("foreach", "fused"):
            tparams = [
                torch.nn.Parameter(torch.from_numpy(p0[offsets[i] : offsets[i + 1]].copy()))
                for i in range(parts)
            ]
            for tp, i in zip(tparams, range(parts), strict=True):
                tp.grad = torch.from_numpy(g0[offsets[i] : offsets[i + 1]].copy())
            opt = torch.optim.Adam(tparams, lr=1e-3, **{kind: True})
            methods[f"torch {kind}"] = (None, opt.step)
    return methods


def measure(n: int, parts: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    methods = make_methods(n, parts, rng)
    for prepare, fn in methods.values():  # warm up: allocate state, fault in pages
        for _ in range(2):
            if prepare is not None:
                prepare()
            fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    order = list(methods)
    for r in range(repeats):
        for k in order[r % len(order) :] + order[: r % len(order)]:
            prepare, fn = methods[k]
            if prepare is not None:
                prepare()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tv = (
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)"
        if torch
        else "no torch"
    )
    return (
        f"{cores} cores ({platform.machine()}, {platform.processor() or 'cpu'}), "
        f"Python {platform.python_version()}, numpy {np.__version__}, {tv}"
    )


def table(rows: list[tuple[int, int, dict[str, float]]]) -> str:
    ours = ("update", "LocalOptimizer.step")
    theirs = [k for k in ("torch foreach", "torch fused") if k in rows[0][2]]
    head = ["params", "tensors", *(f"{k} ms" for k in (*ours, *theirs))]
    head += [f"{a} / {b.split()[1]}" for a in ours for b in theirs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, parts, t in rows:
        cells = [f"{n:.0e}".replace("e+0", "e"), str(parts)]
        cells += [f"{t[k]:.3f}" for k in (*ours, *theirs)]
        cells += [f"{t[a] / t[b]:.2f}x" for a in ours for b in theirs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: small sizes, few repeats")
    ap.add_argument(
        "--write", action="store_true", help="update bench/RESULTS.md (default for a full run)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, like numpy's single-threaded ufuncs)",
    )
    args = ap.parse_args()
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    write = (args.write or not args.quick) and not args.no_write
    rng = np.random.default_rng(0)
    print(machine(), flush=True)
    rows = []
    for n, parts, repeats, quick_repeats in CELLS:
        r = quick_repeats if args.quick else repeats
        if r == 0:
            continue
        t = measure(n, parts, r, rng)
        rows.append((n, parts, t))
        cells = ", ".join(f"{k} {v:.3f} ms" for k, v in t.items())
        print(f"  n={n:.0e} tensors={parts} (median of {r}): {cells}", flush=True)
    out = table(rows)
    print(out)
    if write:
        body = "\n".join(
            [
                SECTION,
                "",
                "Adam step, float32, median of N interleaved repeats; ratios are optd / torch "
                "(below 1 means optd is faster).",
                f"Machine: {machine()}.",
                "",
                out,
                "",
            ]
        )
        write_section(body, SECTION)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
