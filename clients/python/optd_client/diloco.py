"""DiLoCo and Streaming DiLoCo over optd sync sessions (needs the `torch` extra).

Each worker trains with its own inner optimizer; every `sync_every` (H) inner steps it
sends the pseudo-gradient (global params - local params) to an elastic sync session whose
optimizer is the outer one (SGD, Nesterov momentum: arXiv 2311.08105), waits for the round
and loads the new global params. optd closes the round with whoever is live (DESIGN §4).

    diloco = DiLoCo(model, inner, "http://optd:8000", sync_every=50, session="run-1",
                    worker=f"w{rank}", workers=8, min_workers=2, worker_lease_s=10)
    for x, y in data:
        inner.zero_grad(); loss_fn(model(x), y).backward(); inner.step()
        diloco.step()       # every H-th call syncs (a fragment's turn, with fragments=F)
    diloco.close()          # leaves the sessions
"""

from __future__ import annotations

import time
import uuid
import weakref
from typing import Any, Literal

import numpy as np
import torch

from optd_client import _compress
from optd_client._torch_match import session_dtype
from optd_client.client import Client, Session
from optd_client.errors import IdempotencyMismatchError, StaleGradientError

__all__ = ["DiLoCo"]

WireDtype = Literal["float32", "bfloat16", "int8"]


def _np(t: torch.Tensor) -> np.ndarray[Any, Any]:
    return t.detach().cpu().numpy().copy()


class DiLoCo:
    """The DiLoCo outer loop for one worker. Call `step()` after every inner step.

    `session` names the run: every worker passing the same name (and `url`) shares the
    same sessions (one per fragment, `<session>` or `<session>.f<i>`), created by the first
    worker from its parameters (idempotent by name); the others, and any worker that joins
    late or restarts, start from the current global parameters and join the open round.

    `wire_dtype`: "float32" sends pseudo-gradients in the model's dtype and gets the
    parameters back exact; "bfloat16" sends and receives bfloat16; "int8" sends int8
    blocks of `block` values with one float32 scale each (with `error_feedback`, the
    quantization residual is kept and added to the next pseudo-gradient) and receives
    bfloat16. `fragments=F` (Streaming DiLoCo) splits the parameters in F contiguous
    groups; group f syncs at inner steps t (counted from 1) with (t + f*H/F) % H == 0.
    `workers`, `min_workers`, `worker_lease_s`, `round_timeout_s` are the sessions'
    elastic-round settings (DESIGN §4); the lease is renewed at step boundaries.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        inner_optimizer: torch.optim.Optimizer,
        url: Client | str | None = None,
        *,
        sync_every: int,
        outer: str = "sgd",
        outer_lr: float = 0.7,
        momentum: float = 0.9,
        nesterov: bool = True,
        fragments: int = 1,
        wire_dtype: WireDtype = "float32",
        error_feedback: bool = False,
        block: int = _compress.DEFAULT_BLOCK,
        worker: str | None = None,
        session: str = "diloco",
        workers: int = 1,
        min_workers: int | None = None,
        worker_lease_s: float | None = None,
        round_timeout_s: float | None = None,
        outer_options: dict[str, Any] | None = None,
    ) -> None:
        if sync_every < 1 or fragments < 1 or sync_every % fragments:
            raise ValueError("sync_every must be >= 1 and a multiple of fragments")
        if wire_dtype not in ("float32", "bfloat16", "int8"):
            raise ValueError(f"wire_dtype must be float32, bfloat16 or int8, not {wire_dtype!r}")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if len(named) < fragments:
            raise ValueError(f"{fragments} fragments need as many parameters ({len(named)})")
        self.model, self.inner = model, inner_optimizer
        self.sync_every, self.fragments = sync_every, fragments
        self.wire_dtype, self.error_feedback, self.block = wire_dtype, error_feedback, block
        self.worker = worker or f"w-{uuid.uuid4().hex[:8]}"
        self.lease_s = worker_lease_s
        if isinstance(url, Client):
            self.client = url
        else:
            self.client = Client(url)
            weakref.finalize(self, self.client.close)
        self.inner_steps = 0
        self.rounds = 0
        self.stale = 0
        self._params = dict(named)
        groups = np.array_split(np.arange(len(named)), fragments)
        self.groups: list[list[str]] = [[named[i][0] for i in g] for g in groups]
        options: dict[str, Any] = {"mode": "sync", "workers": workers}
        options["dtype"] = session_dtype(named, None)
        elastic = {
            "min_workers": min_workers,
            "worker_lease_s": worker_lease_s,
            "round_timeout_s": round_timeout_s,
        }
        options |= {k: v for k, v in elastic.items() if v is not None}
        if outer == "sgd":
            options |= {"lr": outer_lr, "momentum": momentum, "nesterov": nesterov}
        else:
            options |= {"lr": outer_lr}
        options |= outer_options or {}
        self.sessions: list[Session] = []
        self._global: list[dict[str, np.ndarray[Any, Any]]] = []
        self._base: list[int] = []
        self._residual: dict[str, np.ndarray[Any, Any]] = {}
        for f, names in enumerate(self.groups):
            name = session if fragments == 1 else f"{session}.f{f}"
            s = self._open(name, outer, {n: _np(self._params[n]) for n in names}, options)
            self.sessions.append(s)
            s.join()
            self._global.append({})
            self._base.append(0)
            self._load(f, s.params())  # exact float32/64: a newcomer starts from the state
        self._contact = time.monotonic()

    def _open(
        self, name: str, outer: str, params: dict[str, Any], options: dict[str, Any]
    ) -> Session:
        core = self.client._core
        key = f"optd-diloco:{name}"
        try:
            info = self.client._run(core.create(outer, params, options, key))
            sid = str(info["id"])
        except IdempotencyMismatchError as exc:  # created by a worker with other init params
            sid = str(exc.problem.get("id", ""))
            if not sid:
                raise
        return self.client.session(sid, worker=self.worker)

    def _load(self, f: int, new: dict[str, np.ndarray[Any, Any]]) -> None:
        with torch.no_grad():
            for n in self.groups[f]:
                p = self._params[n]
                value = torch.from_numpy(np.asarray(new[n])).reshape(p.shape)
                p.copy_(value.to(p.dtype))
                self._global[f][n] = p.detach().cpu().numpy().copy()
        version = self.sessions[f].version
        self._base[f] = version if version is not None else self._base[f]

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self.sessions)

    @property
    def bytes_received(self) -> int:
        return sum(s.bytes_received for s in self.sessions)

    def due(self, f: int) -> bool:
        """Whether fragment f syncs at the current inner step."""
        offset = f * self.sync_every // self.fragments
        return (self.inner_steps + offset) % self.sync_every == 0

    def step(self) -> list[int]:
        """Count one inner step; sync the fragments whose turn it is. Returns them."""
        self.inner_steps += 1
        synced = [f for f in range(self.fragments) if self.due(f)]
        for f in synced:
            self.sync(f)
        if not synced and self.lease_s and time.monotonic() - self._contact > self.lease_s / 3:
            for s in self.sessions:
                s.join()  # a heartbeat: rounds keep waiting for this worker
            self._contact = time.monotonic()
        return synced

    def pseudo_gradient(self, f: int) -> dict[str, np.ndarray[Any, Any]]:
        """Global minus local parameters of fragment f (plus the residual, int8 + EF)."""
        out = {}
        for n in self.groups[f]:
            delta = self._global[f][n] - self._params[n].detach().cpu().numpy()
            if self.wire_dtype == "int8" and self.error_feedback:
                delta = delta + self._residual.get(n, 0.0)
                q, scale = _compress.int8_block(delta, self.block)
                sent = _compress.dequantize(q, scale, self.block).astype(delta.dtype)
                self._residual[n] = delta - sent
            out[n] = delta
        return out

    def sync(self, f: int) -> None:
        """Send fragment f's pseudo-gradient, wait for its round, load the result."""
        s = self.sessions[f]
        back = "float32" if self.wire_dtype == "float32" else "bfloat16"
        grad_dtype: _compress.GradDtype = (
            "float32" if self.wire_dtype == "float32" else (self.wire_dtype)
        )
        try:
            new = s.step(
                self.pseudo_gradient(f),
                base_version=self._base[f],
                grad_dtype=grad_dtype,
                params_dtype=back,
                block=self.block,
            )
            self.rounds += 1
        except StaleGradientError:  # the round closed without us: adopt the global params
            self.stale += 1
            new = s.params(params_dtype=back)
        self._load(f, new)
        self._contact = time.monotonic()

    def close(self) -> None:
        """Leave every session (rounds stop waiting for this worker)."""
        for s in self.sessions:
            s.leave()

    def __enter__(self) -> DiLoCo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
