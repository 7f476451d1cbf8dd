"""One DiLoCo run as the parent process sees it (examples/diloco.py and bench/diloco).

`run(url, mode, rounds, ...)` trains the 64-64-10 MLP with 4 worker processes
(examples/_diloco.py) on one elastic sync session (min_workers 2, lease 2 s, round timeout
10 s). When the session is halfway, worker w3 gets SIGKILL; the parent measures how long
the round that waits for it stays open (until its lease runs out), then a spare worker,
w4, joins the running group. The parent samples the global parameters: the full training
loss against time and against the bytes the workers sent.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from _diloco import JOINER, LEASE_S, VICTIM, WORKERS, Mode, context, full_loss, make_model, worker
from optd_client import Client


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
    reports: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # (version, B)

    @property
    def final(self) -> tuple[float, int, float, int]:
        return self.trace[-1]

    def settle(self) -> None:
        """Bytes of each sample from the workers' reports by version: what was sent for
        the rounds before it (a live count lags by the reports still in the queue)."""
        per = [np.array(sorted(r)) for r in self.reports.values()]

        def sent(v: float) -> int:
            at = [np.searchsorted(a[:, 0], v, side="right") for a in per]
            return int(sum(a[i - 1, 1] for a, i in zip(per, at, strict=True) if i))

        self.trace = [(t, v, lo, sent(v)) for t, v, lo, _ in self.trace]
        self.kill["bytes"] = sent(self.kill["version"])

    def absorb(self, ev: tuple[Any, ...], t0: float, log: Any) -> None:
        """A worker's event: ("joined", rank, t, sid, version) or ("synced" | "done", rank,
        t, version, bytes sent, rounds contributed)."""
        kind, rank, t = ev[0], ev[1], ev[2] - t0
        if kind == "joined" and rank == JOINER:
            self.join.update(t=t, version=float(ev[4] or 0))
        if kind == "joined":
            return
        self.sent[rank] = ev[4]
        self.reports.setdefault(rank, []).append((ev[3], ev[4]))
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


def _wait_close(obs: Any, victim: str, v_kill: int, t_kill: float, limit: float,
                sample: Any) -> float:  # fmt: skip
    """Poll GET .../workers until the first round without the victim has closed (and keep
    sampling the loss every 0.1 s meanwhile)."""
    sampled = t_kill
    while (now := time.monotonic()) - t_kill < limit:
        if now - sampled >= 0.1:
            sampled = sample()
        listing = obs.workers()
        row = next((w for w in listing["workers"] if w["worker"] == victim), {})
        version, contributed = int(listing["round"]["version"]), row.get("last_version")
        # the round it was waited for: the next after its last contribution (or the open one)
        if version > (v_kill if contributed is None else contributed + 1):
            return now - t_kill
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

        def sample() -> float:  # the loss of the global params now: a point of the trace
            params = obs.params()
            model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
            now, version, sent = time.monotonic(), obs.version or 0, sum(out.sent.values())
            out.trace.append((now - t0, version, full_loss(model, xt, yt), sent))
            return now

        go.set()
        t0 = last_line = time.monotonic()
        while True:
            for ev in _drain(events):
                out.absorb(ev, t0, log)
            now = sample()
            version, sent = out.trace[-1][1], out.trace[-1][3]
            if not out.kill and version >= rounds // 2:
                t_kill = time.monotonic()
                os.kill(procs[VICTIM].pid, signal.SIGKILL)
                close_s = _wait_close(obs, f"w{VICTIM}", version, t_kill, LEASE_S + 10, sample)
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
        out.settle()
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
