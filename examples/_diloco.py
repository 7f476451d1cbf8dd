"""DiLoCo with worker processes on the digits, the workers' side: the model, the modes,
the worker process and the fork server that starts them. examples/diloco.py and
bench/diloco share it and examples/_diloco_runs.py (the parent's side, `run`).

How a run ends (and why it cannot hang): every worker, the newcomer too, trains until
the session's version reaches `rounds` - "train until the global model has had R outer
steps". The rounds are in lockstep, so the live workers leave together after the last
round, and no worker is ever left alone below min_workers waiting for a round that
nobody else will join.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing import forkserver
from typing import Any

import numpy as np
import torch
from optd_client import Client
from optd_client.torch import DiLoCo
from torch.nn.functional import cross_entropy

SIZES, BATCH, H = (64, 64, 10), 32, 25  # H: inner steps between two DiLoCo rounds
WORKERS, MIN_WORKERS, LEASE_S, ROUND_TIMEOUT_S = 4, 2, 2.0, 10.0
VICTIM, JOINER = 3, 4  # ranks of the worker killed halfway and of its replacement
_STARTED: list[bool] = []  # the fork server runs


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    sync_every: int
    wire_dtype: str
    error_feedback: bool
    inner: str  # "sgd" (lr 1: the pseudo-gradient is the gradient) or "adamw"
    inner_lr: float
    outer: str
    outer_lr: float


MODES = (
    # Sync data parallel through the same machinery: one inner SGD step with lr 1 makes
    # the pseudo-gradient equal to the minibatch gradient, and the session's Adam applies
    # the mean of the 4 workers' gradients every step. Both learning rates decay to 0 with
    # a cosine over the run (see `worker`); their peaks are the best after 1000 steps
    # (Adam: of 1e-2, 3e-2, 1e-1, 2e-1; AdamW inside DiLoCo: of 3e-3, 1e-2, 3e-2).
    Mode("sync", "sync data parallel (float32)", 1, "float32", False, "sgd", 1.0, "adam", 1e-1),
    Mode("bf16", f"DiLoCo H={H}, bfloat16", H, "bfloat16", False, "adamw", 1e-2, "sgd", 0.7),
    Mode("int8", f"DiLoCo H={H}, int8 + error feedback", H, "int8", True, "adamw", 1e-2,
         "sgd", 0.7),
)  # fmt: skip


def context(preload: tuple[str, ...] = ()) -> Any:
    """Worker processes from a fork server that has imported torch and the SDK once: a
    worker (and the late joiner) starts in milliseconds, not the seconds an import of
    torch takes, and nothing is forked from a process with threads (unlike "fork").
    `preload`: more modules for it, e.g. those the script imports (a worker re-imports
    the script as `__mp_main__`)."""
    ctx = mp.get_context("forkserver")
    if _STARTED:
        return ctx
    _STARTED.append(True)
    # torch._dynamo is what the first torch optimizer imports (2 s)
    modules = ["torch", "torch._dynamo", "optd_client.torch", __name__, *preload]
    ctx.set_forkserver_preload(modules)
    # Start it now (e.g. while the optd server starts). Python 3.11's fork server ignores
    # the parent's sys.path, so it learns where these modules are from PYTHONPATH.
    old = os.environ.get("PYTHONPATH")
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [old])])
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    return ctx


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # every worker builds the same model: the session is created once
    layers: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers += [torch.nn.Linear(n_in, n_out)] + ([torch.nn.ReLU()] if i < len(SIZES) - 2 else [])
    return torch.nn.Sequential(*layers)


def full_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(cross_entropy(model(x), y))


def worker(url: str, name: str, mode: Mode, rank: int, rounds: int, data: str, seed: int,
           go: Any, events: Any, standby: Any = None) -> None:  # fmt: skip
    """One worker process: join, wait for the start, train until version `rounds`, leave.
    With `standby` (an event), it is a spare machine: ready, but it joins only when told."""
    torch.set_num_threads(1)  # tiny tensors: more threads only fight over 2 cores
    with np.load(data) as npz:  # a file: 370 kB of arguments would make a start take 1 s
        x, y = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"])
    model = make_model(seed)
    inner: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=mode.inner_lr)
        if mode.inner == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=mode.inner_lr)
    )
    rng = np.random.default_rng([seed, rank])
    full_loss(model, x, y)  # warm up torch before joining: the first call is slow
    client = Client(url)
    if standby is not None and not standby.wait(600):
        return
    t_join = time.monotonic()
    sync_dp = mode.sync_every == 1  # the session's Adam decays (inner SGD keeps lr 1)
    cosine = {"schedule": {"name": "cosine", "total_steps": rounds}} if sync_dp else None
    diloco = DiLoCo(
        model, inner, client, sync_every=mode.sync_every, outer=mode.outer,
        outer_lr=mode.outer_lr, session=name, worker=f"w{rank}", workers=WORKERS,
        min_workers=MIN_WORKERS, worker_lease_s=LEASE_S, round_timeout_s=ROUND_TIMEOUT_S,
        wire_dtype=mode.wire_dtype,  # type: ignore[arg-type]
        error_feedback=mode.error_feedback, outer_options=cosine,
    )  # fmt: skip
    s = diloco.sessions[0]
    events.put(("joined", rank, t_join, s.id, s.version))
    while not go.wait(LEASE_S / 4):  # the others are still starting: keep the lease
        s.join()
    version, local = s.version or 0, 0
    while version < rounds:
        if not sync_dp:  # inner cosine by the run's progress: a newcomer picks it up
            progress = min(1.0, (version * mode.sync_every + local) / (rounds * mode.sync_every))
            for group in inner.param_groups:
                group["lr"] = mode.inner_lr * (1 + math.cos(math.pi * progress)) / 2
        local += 1
        idx = torch.from_numpy(rng.integers(0, len(y), BATCH))
        inner.zero_grad()
        cross_entropy(model(x[idx]), y[idx]).backward()
        inner.step()
        if diloco.step():  # a round: the pseudo-gradient went out, the global params came in
            version, local = s.version or 0, 0
            events.put(("synced", rank, time.monotonic(), version, diloco.bytes_sent,
                        diloco.rounds))  # fmt: skip
    diloco.close()  # leave: no round waits for this worker any more
    client.close()
    events.put(("done", rank, time.monotonic(), version, diloco.bytes_sent, diloco.rounds))
