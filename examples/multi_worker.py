"""Many workers, one optimizer: 4 processes step one optd session asynchronously.

The digits MLP (64-256-256-10, numpy forward and backward) is trained with Adam on
one session, by 1 worker and then by 4 worker processes (`multiprocessing`, spawn),
each with its own `Client`, minibatches of 32 and the same total number of steps.
A worker sends the gradient of its minibatch at the parameters it last received,
with `base_version` (so the server reports its staleness) and gets the newest
parameters back; every step is applied on arrival, atomically. The parent process
samples the session's parameters a few times a second and records the full
training loss against wall time.

    python examples/multi_worker.py [--url URL] [--steps 2000] [--workers 4]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
from _common import Progress, digits, parser, plt, save
from _server import optd_server
from optd_client import Client
from threadpoolctl import threadpool_limits

SIZES = (64, 256, 256, 10)
BATCH = 32
LR = 1e-3


def init_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        bound = 1 / np.sqrt(n_in)  # torch.nn.Linear's default
        params[f"w{i}"] = rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32)
        params[f"b{i}"] = rng.uniform(-bound, bound, n_out).astype(np.float32)
    return params


def loss_and_grads(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, grads: bool = True):
    """Cross-entropy of the ReLU MLP and, if asked, its gradients (hand-written backprop)."""
    layers = len(SIZES) - 1
    acts = [x]
    for i in range(layers):
        z = acts[-1] @ p[f"w{i}"] + p[f"b{i}"]
        acts.append(np.maximum(z, 0) if i < layers - 1 else z)
    logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    if not grads:
        return loss, None
    delta = np.exp(logp)
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    g = {}
    for i in reversed(range(layers)):
        g[f"w{i}"] = acts[i].T @ delta
        g[f"b{i}"] = delta.sum(axis=0)
        if i:
            delta = (delta @ p[f"w{i}"].T) * (acts[i] > 0)
    return loss, g


def worker(url, sid, rank, steps, x, y, seed, start, out) -> None:
    """One process: its own client, its own minibatches, the shared session."""
    threadpool_limits(1)  # one BLAS thread per process: more only fight over the cores
    rng = np.random.default_rng([seed, rank])
    with Client(url) as client:
        session = client.session(sid, worker=f"w{rank}")
        params = session.params()
        start.wait()  # every worker is connected: the clock starts now
        stale = []
        for _ in range(steps):
            idx = rng.integers(0, len(y), BATCH)
            loss, grads = loss_and_grads(params, x[idx], y[idx])
            params = session.step(grads, base_version=session.version, loss=loss)
            stale.append(session.last.staleness or 0)
    out.put((rank, time.monotonic(), stale))


def run(url: str, n: int, args, x: np.ndarray, y: np.ndarray, log: Progress) -> dict:
    ctx = mp.get_context("spawn")
    with Client(url) as client:
        session = client.create_session("adam", init_params(args.seed), lr=LR)
        start, out = ctx.Barrier(n + 1), ctx.Queue()
        per = [args.steps // n + (r < args.steps % n) for r in range(n)]
        procs = [
            ctx.Process(
                target=worker, args=(url, session.id, r, per[r], x, y, args.seed, start, out)
            )
            for r in range(n)
        ]
        for proc in procs:
            proc.start()
        start.wait(timeout=120)
        t0 = time.monotonic()
        trace = []  # (seconds, version, full training loss)
        while True:
            params = session.params()
            trace.append(
                (time.monotonic() - t0, session.version, loss_and_grads(params, x, y, False)[0])
            )
            if trace[-1][1] >= args.steps:
                break
            if not any(proc.is_alive() for proc in procs):
                raise RuntimeError(f"the workers stopped at version {trace[-1][1]}")
            if len(trace) % 10 == 0:
                log(
                    f"{n} worker(s): {trace[-1][0]:5.1f} s  version {trace[-1][1]:5d}  "
                    f"train loss {trace[-1][2]:.4f}"
                )
            time.sleep(0.2)
        done = [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join()
        session.delete()
    stale = [s for _, _, st in done for s in st]
    seconds = max(t for _, t, _ in done) - t0
    return {
        "trace": trace,
        "seconds": seconds,
        "steps_per_s": args.steps / seconds,
        "staleness": float(np.mean(stale)),
        "max_staleness": int(max(stale)),
    }


def main() -> None:
    p = parser("multi_worker", __doc__, steps=2000)
    p.add_argument("--workers", type=int, default=4, help="workers of the second run (default 4)")
    args = p.parse_args()
    log = Progress(args.quiet)
    threadpool_limits(1)
    x, y, _, _ = digits(args.seed)
    load = os.getloadavg()[0]  # other programs on the machine make the timing noisy
    results = {}
    with optd_server(args.url, quiet=args.quiet) as url:
        for n in (1, args.workers):
            results[n] = r = run(url, n, args, x, y, log)
            log(
                f"{n} worker(s): {args.steps} steps in {r['seconds']:.1f} s "
                f"({r['steps_per_s']:.0f} steps/s), final train loss {r['trace'][-1][2]:.4f}, "
                f"mean staleness {r['staleness']:.2f} (max {r['max_staleness']})"
            )

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for i, (n, r) in enumerate(results.items()):
        t, v, loss = (np.array(c) for c in zip(*r["trace"], strict=True))
        label = (
            f"{n} worker{'s' if n > 1 else ''}: {r['steps_per_s']:.0f} steps/s, "
            f"mean staleness {r['staleness']:.2f}"
        )
        ax1.plot(t, loss, "o-", ms=3, color=f"C{i}", label=label)
        ax2.plot(v, loss, "o-", ms=3, color=f"C{i}", label=f"{n} worker{'s' if n > 1 else ''}")
    ax1.set(xlabel="wall time (s)", ylabel="full training loss (log)", yscale="log")
    ax1.set_title("Loss against wall time")
    ax1.legend()
    ax2.set(xlabel="steps applied (session version)", ylabel="full training loss (log)")
    ax2.set(yscale="log", title="Loss against steps")
    ax2.legend()
    fig.suptitle(
        f"{args.steps} async Adam steps on one optd session, minibatch {BATCH}; {os.cpu_count()} "
        f"CPU cores shared by server and workers (load average {load:.1f} before the runs)"
    )
    save(fig, args.out)
    Progress.summary(
        initial_loss=results[1]["trace"][0][2],
        final_loss=results[1]["trace"][-1][2],
        load_average=load,
        final={
            n: {k: v for k, v in r.items() if k != "trace"} | {"loss": r["trace"][-1][2]}
            for n, r in results.items()
        },
    )


if __name__ == "__main__":
    main()
