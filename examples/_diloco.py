"""DiLoCo with worker processes on the digits: what examples/diloco.py and bench/diloco share.

`run(url, mode, rounds, ...)` trains the 64-64-10 MLP with 4 worker processes on one
elastic sync session (min_workers 2, lease 2 s, round timeout 10 s). When the session is
halfway, worker w3 gets SIGKILL; the parent measures how long the round that waits for it
stays open (until its lease runs out), then a new worker, w4, joins the running group.
The parent samples the global parameters: the full training loss against time and bytes.

How the run ends (and why it cannot hang): every worker, the newcomer too, trains until
the session's version reaches `rounds` - "train until the global model has had R outer
steps". The rounds are in lockstep, so the live workers leave together after the last
round, and no worker is ever left alone below min_workers waiting for a round that
nobody else will join.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
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
    # the mean of the 4 workers' gradients every step.
    Mode("sync", "sync data parallel (float32)", 1, "float32", False, "sgd", 1.0, "adam", 3e-3),
    Mode("bf16", f"DiLoCo H={H}, bfloat16", H, "bfloat16", False, "adamw", 3e-3, "sgd", 0.7),
    Mode("int8", f"DiLoCo H={H}, int8 + error feedback", H, "int8", True, "adamw", 3e-3,
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
    diloco = DiLoCo(
        model, inner, client, sync_every=mode.sync_every, outer=mode.outer,
        outer_lr=mode.outer_lr, session=name, worker=f"w{rank}", workers=WORKERS,
        min_workers=MIN_WORKERS, worker_lease_s=LEASE_S, round_timeout_s=ROUND_TIMEOUT_S,
        wire_dtype=mode.wire_dtype,  # type: ignore[arg-type]
        error_feedback=mode.error_feedback,
    )  # fmt: skip
    s = diloco.sessions[0]
    events.put(("joined", rank, t_join, s.id, s.version))
    while not go.wait(LEASE_S / 4):  # the others are still starting: keep the lease
        s.join()
    version = s.version or 0
    while version < rounds:
        idx = torch.from_numpy(rng.integers(0, len(y), BATCH))
        inner.zero_grad()
        cross_entropy(model(x[idx]), y[idx]).backward()
        inner.step()
        if diloco.step():  # a round: the pseudo-gradient went out, the global params came in
            version = s.version or 0
            events.put(("synced", rank, time.monotonic(), version, diloco.bytes_sent,
                        diloco.rounds))  # fmt: skip
    diloco.close()  # leave: no round waits for this worker any more
    client.close()
    events.put(("done", rank, time.monotonic(), version, diloco.bytes_sent, diloco.rounds))


@dataclass
class Run:
    """What the parent saw of one run: the loss trace, the kill and the join."""

    mode: Mode
    sid: str = ""
    ui_url: str = ""
    trace: list[tuple[float, int, float, int]] = field(default_factory=list)  # t, v, loss, B
    kill: dict[str, float] = field(default_factory=dict)  # t, version, bytes, close_s
    join: dict[str, float] = field(default_factory=dict)  # t, version, first_s, waited
    round_s: float = 0.0  # median seconds from one round to the next (w0's view)
    seconds: float = 0.0
    sent: dict[int, int] = field(default_factory=dict)  # bytes each worker reported
    done: set[int] = field(default_factory=set)
    synced0: list[float] = field(default_factory=list)  # when w0 got each round's answer

    @property
    def final(self) -> tuple[float, int, float, int]:
        return self.trace[-1]

    def absorb(self, ev: tuple[Any, ...], t0: float, log: Any) -> None:
        """A worker's event: ("joined", rank, t, sid, version) or ("synced" | "done", rank,
        t, version, bytes sent, rounds contributed)."""
        kind, rank, t = ev[0], ev[1], ev[2] - t0
        if kind == "joined" and rank == JOINER:
            self.join.update(t=t, version=float(ev[4] or 0))
        if kind == "joined":
            return
        self.sent[rank] = ev[4]
        if kind == "done":
            self.done.add(rank)
        elif rank == 0:
            self.synced0.append(t)
        if rank == JOINER and ev[5] >= 1 and "first_s" not in self.join:
            self.join["first_s"] = t - self.join["t"]
            # 0: its first contribution was in the round open when it joined
            self.join["waited"] = ev[3] - 1 - self.join["version"]
            v, first = self.join["version"], self.join["first_s"]
            log(f"[{self.mode.key}] w{JOINER} joined at version {v:.0f}; its first "
                f"contribution was accepted {first:.2f} s later")  # fmt: skip


def bytes_to_reach(trace: list[tuple[float, int, float, int]], loss: float) -> float | None:
    """Bytes sent when the sampled loss first got to `loss` or below (None: never)."""
    return next((float(b) for _, _, lo, b in trace if lo <= loss), None)


def _wait_close(obs: Any, victim: str, t_kill: float, limit: float) -> tuple[float, int]:
    """Poll GET .../workers until the first round without the victim has closed."""
    while (now := time.monotonic()) - t_kill < limit:
        listing = obs.workers()
        row = next(w for w in listing["workers"] if w["worker"] == victim)
        version = int(listing["round"]["version"])
        if version >= int(row["last_version"]) + 2:  # its next round closed without it
            return now - t_kill, version
        time.sleep(0.01)
    raise TimeoutError(f"the round waiting for {victim} was still open after {limit:g} s")


def run(url: str, mode: Mode, rounds: int, data: tuple[np.ndarray, np.ndarray], seed: int,
        log: Any, *, poll_s: float = 0.1, limit_s: float = 300.0) -> Run:  # fmt: skip
    """One training run (see the module docstring); kills every child on any failure."""
    ctx = context()
    name, out = f"diloco-{mode.key}-{uuid.uuid4().hex[:8]}", Run(mode)
    go, standby, events = ctx.Event(), ctx.Event(), ctx.Queue()
    procs: dict[int, Any] = {}
    tmp = tempfile.TemporaryDirectory(prefix="optd-diloco-")
    path = os.path.join(tmp.name, "data.npz")
    np.savez(path, x=data[0], y=data[1])
    xt, yt = (torch.from_numpy(a) for a in data)
    model = make_model(seed)
    client = Client(url)
    try:
        for rank in [*range(WORKERS), JOINER]:  # w4 is a spare: ready, joins when told
            procs[rank] = ctx.Process(
                target=worker, daemon=True, name=f"diloco-w{rank}",
                args=(url, name, mode, rank, rounds, path, seed, go, events,
                      standby if rank == JOINER else None),
            )  # fmt: skip
            procs[rank].start()
        joined = [_next(events, procs, 60.0) for _ in range(WORKERS)]
        obs = client.session(str(joined[0][3]))  # no worker id: the parent is no member
        out.sid, out.ui_url = obs.id, obs.ui_url
        go.set()
        t0 = last_line = time.monotonic()
        while True:
            for ev in _drain(events):
                out.absorb(ev, t0, log)
            params = obs.params()
            model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
            now, version = time.monotonic(), obs.version or 0
            sent = sum(out.sent.values())
            out.trace.append((now - t0, version, full_loss(model, xt, yt), sent))
            if not out.kill and version >= rounds // 2:
                t_kill = time.monotonic()
                os.kill(procs[VICTIM].pid, signal.SIGKILL)
                close_s, _ = _wait_close(obs, f"w{VICTIM}", t_kill, LEASE_S + 10)
                out.kill = {"t": t_kill - t0, "version": version, "bytes": sent,
                            "close_s": close_s}  # fmt: skip
                log(f"[{mode.key}] round {version}: SIGKILL w{VICTIM}; the round waiting for"
                    f" it closed {close_s:.2f} s later (lease {LEASE_S:g} s)")  # fmt: skip
                standby.set()  # the replacement joins the running group
            if version >= rounds and out.done >= set(procs) - {VICTIM}:
                break
            for rank, p in procs.items():
                if rank != VICTIM and p.exitcode not in (None, 0):
                    raise RuntimeError(f"worker w{rank} exited with {p.exitcode}")
            if now - t0 > limit_s:
                raise TimeoutError(f"[{mode.key}] not done after {limit_s:g} s: version "
                                   f"{version}, done {sorted(out.done)}")  # fmt: skip
            if now - last_line >= 1.0:
                last_line = now
                log(f"[{mode.key}] {now - t0:5.1f} s  round {version:4d}/{rounds}  loss "
                    f"{out.trace[-1][2]:.4f}  sent {sent / 1e6:7.3f} MB")  # fmt: skip
            time.sleep(poll_s)
        out.seconds = out.trace[-1][0]
        gaps = np.diff(out.synced0)
        out.round_s = float(np.median(gaps)) if len(gaps) else float("nan")
        for p in procs.values():
            p.join(timeout=10)
        return out
    finally:
        client.close()
        tmp.cleanup()
        for p in procs.values():
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def _drain(events: Any) -> list[tuple[Any, ...]]:
    out = []
    with contextlib.suppress(queue.Empty):
        while True:
            out.append(events.get_nowait())
    return out


def _next(events: Any, procs: dict[int, Any], timeout: float) -> tuple[Any, ...]:
    """The next event, failing early if a worker died before sending it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return tuple(events.get(timeout=0.2))
        except queue.Empty:
            if dead := [r for r, p in procs.items() if p.exitcode not in (None, 0)]:
                raise RuntimeError(f"worker(s) {dead} exited before joining") from None
    raise TimeoutError(f"the workers had not all joined after {timeout:g} s")
