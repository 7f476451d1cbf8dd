"""A remote optd session as a `torch.optim.Optimizer` (needs the `torch` extra).

opt = RemoteOptimizer(model.named_parameters(), "http://optd:8000", "adam", lr=1e-3)
for x, y in data:
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    opt.step()          # sends the .grads, copies the new parameters into the model
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, overload

import numpy as np
import torch

from optd_client._convert import from_torch_state_dict, has_torch_layout, to_torch_state_dict
from optd_client._torch_match import check_real, session_dtype
from optd_client.client import Client, Session
from optd_client.diloco import DiLoCo
from optd_client.types import PARAM_SLOT, Checkpoint

__all__ = ["DiLoCo", "RemoteOptimizer", "from_torch_state_dict", "to_torch_state_dict"]

# session settings a plain torch state dict knows nothing about: keep the session's
_CARRIED = (
    "schedule max_grad_norm check_finite mode workers max_staleness staleness_lr labels ttl_s"
)
_NAMES = ("params", "param_names")


def _numpy(t: torch.Tensor) -> np.ndarray[Any, Any]:
    t = t.detach()
    if t.is_sparse:
        raise ValueError("sparse gradients are not supported")
    if t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()  # bfloat16 has no numpy dtype
    return t.cpu().numpy()


def _plain(value: Any) -> Any:
    """A hyperparameter as JSON would carry it (tuples as lists, tensors as numbers)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class RemoteOptimizer(torch.optim.Optimizer):
    """Drop-in for a `torch.optim` optimizer whose state lives in an optd session.

    `params` must be `model.named_parameters()` (optd names parameters). A new session
    is created from the current parameter values unless `session_id` names one to join
    (its parameters are then copied into the model). Keyword arguments are
    hyperparameters (`lr`, `betas`, ...) or session options (`dtype`, `schedule`,
    `max_grad_norm`, `labels`, ...), as in `Client.create_session`.

    The session's dtype is float64 when every parameter is float64 and float32 when
    none is. A model that mixes them needs `dtype=`: "float64" keeps every value but
    updates float32 parameters in float64 (then rounds them), "float32" rounds the float64
    ones; either differs from torch, which updates each in its own dtype. Complex (and
    integer) parameters are refused with TypeError: the server holds real state only, and
    torch's complex update (on `view_as_real`) cannot be reproduced from a flat array.

    `param_groups[0]` holds `lr` and the other hyperparameters; changes to it (by hand
    or by a torch LR scheduler) are sent with PATCH before the next step.
    """

    def __init__(
        self,
        params: Iterable[tuple[str, torch.Tensor]],
        client: Client | str | None = None,
        optimizer: str = "adam",
        *,
        session_id: str | None = None,
        worker: str | None = None,
        **options: Any,
    ) -> None:
        named = list(params)
        if not named or not all(isinstance(item, tuple) and len(item) == 2 for item in named):
            raise TypeError("RemoteOptimizer takes model.named_parameters(): (name, tensor) pairs")
        named = [(str(name), p) for name, p in named]
        check_real(named)  # before a session exists: complex would lose its imaginary part
        self._names = [name for name, _ in named]
        if session_id is None:  # a mix of float32 and float64 needs the caller's dtype=
            options["dtype"] = session_dtype(named, options.get("dtype"))
        if isinstance(client, Client):
            self.client = client
        else:  # ours: close its connections when this optimizer goes away
            self.client = Client(client)
            weakref.finalize(self, self.client.close)
        if session_id is None:
            arrays = {name: _numpy(p) for name, p in named}
            self.session: Session = self.client.create_session(optimizer, arrays, **options)
        else:
            self.session = self.client.session(session_id)
        self.session.worker = worker
        info = self.session.info()
        self.optimizer_name = str(info["optimizer"])
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in info["hyperparams"].items()}
        super().__init__(named, hyper)
        self._synced = {k: _plain(v) for k, v in hyper.items()}
        if session_id is not None:
            self._copy_in(self.session.params())

    @property
    def _params(self) -> list[torch.Tensor]:
        params: list[torch.Tensor] = self.param_groups[0]["params"]
        return params

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError("RemoteOptimizer has one param group; use optd `groups=` instead")
        super().add_param_group(param_group)

    def _copy_in(self, new: dict[str, np.ndarray[Any, Any]]) -> None:
        with torch.no_grad():
            for name, p in zip(self._names, self._params, strict=True):
                if name in new:
                    p.copy_(torch.from_numpy(new[name]).reshape(p.shape))

    def _push_hyperparams(self) -> None:
        group = self.param_groups[0]
        current = {k: _plain(group[k]) for k in self._synced if k in group}
        changed = {k: v for k, v in current.items() if v != self._synced[k]}
        if changed:
            self.session.update(**changed)
            self._synced.update(changed)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Send the gradients of the parameters that have one; copy back the new values."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._push_hyperparams()
        grads = {
            name: _numpy(p.grad)
            for name, p in zip(self._names, self._params, strict=True)
            if p.grad is not None
        }
        if grads:
            sent_loss = None
            if loss is not None:  # closures usually return the loss tensor
                sent_loss = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
            self._copy_in(self.session.step(grads, loss=sent_loss))
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The session's checkpoint as a torch state dict in the layout of the optimizer's
        `torch.optim` class, with the optd meta document under `"optd"` so that
        `load_state_dict` restores it exactly.

        An optimizer torch has no class for (adabelief, lion), or settings torch cannot
        express (`bias_correction=False`), keeps its slots under `["optd"]["tensors"]` and
        lists no parameters in `param_groups`, so a `torch.optim` optimizer refuses to load
        it (its group sizes differ) instead of silently starting from empty state."""
        ckpt = self.session.state()
        optd: dict[str, Any] = {"session": self.session.id, "version": ckpt.version}
        optd["meta"] = ckpt.meta
        if has_torch_layout(ckpt.meta["config"]):
            return {**to_torch_state_dict(ckpt, self._names), "optd": optd}
        optd["tensors"] = {
            k: torch.from_numpy(v) for k, v in ckpt.tensors.items() if not k.startswith("param/")
        }
        group = {k: v for k, v in self.param_groups[0].items() if k not in _NAMES}
        return {"state": {}, "param_groups": [{**group, "params": []}], "optd": optd}

    def load_state_dict(self, state_dict: dict[str, Any] | torch.optim.Optimizer) -> None:
        """Restore optimizer state into the session; parameter values are the model's
        current ones (load the model's own state dict first, as with torch).

        Takes a `state_dict()` of a RemoteOptimizer of the same optd optimizer, or a torch
        optimizer of the matching class (or its state dict). Parameters are matched by name
        (torch stores `param_names` when the optimizer was built from named parameters) or,
        for a torch optimizer passed itself, by identity; a state dict with several groups
        and no names is refused, since model order says nothing about them. Parameters
        the state does not hold (frozen ones) start unstepped."""
        named = list(zip(self._names, self._params, strict=True))
        if isinstance(state_dict, RemoteOptimizer):
            state_dict = state_dict.state_dict()
        optd = {} if isinstance(state_dict, torch.optim.Optimizer) else state_dict.get("optd")
        if optd:
            wrote = str(optd["meta"]["config"]["optimizer"])
            if wrote != self.optimizer_name:
                raise ValueError(
                    f"this state dict is from a {wrote!r} session and this RemoteOptimizer "
                    f"runs {self.optimizer_name!r}; load it into RemoteOptimizer(..., {wrote!r})"
                )
        if optd and "tensors" in optd:
            ckpt = self._optd_checkpoint(optd, named)
        elif optd:
            ckpt = from_torch_state_dict(
                state_dict, named, template=optd["meta"], include_unlisted=True
            )
        else:  # a plain torch state dict: keep this session's own settings
            info = self.session.info()
            keep = {k: info[k] for k in _CARRIED.split() if info.get(k) is not None}
            ckpt = from_torch_state_dict(
                state_dict,
                named,
                self.optimizer_name,
                dtype=info["dtype"],
                include_unlisted=True,
                **keep,
            )
        self.session.load_state(ckpt)
        info = self.session.info()
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in info["hyperparams"].items()}
        self.param_groups[0].update(hyper)
        self._synced = {k: _plain(v) for k, v in hyper.items()}

    @staticmethod
    def _optd_checkpoint(optd: dict[str, Any], named: list[tuple[str, torch.Tensor]]) -> Checkpoint:
        """The checkpoint of a state dict that keeps its slots in optd form."""
        held = sorted(str(name) for name, _, _ in optd["meta"]["layout"])
        if held != sorted(name for name, _ in named):
            raise ValueError(
                f"the state dict holds parameters {held[:5]}..., not this model's; an optd "
                "state of an optimizer without a torch class is loaded by exact names"
            )
        tensors = {k: np.array(v.detach().cpu().numpy()) for k, v in optd["tensors"].items()}
        dtype = np.dtype(optd["meta"]["config"].get("dtype", "float32"))
        tensors |= {f"{PARAM_SLOT}/{n}": _numpy(p).astype(dtype) for n, p in named}
        return Checkpoint(tensors=tensors, meta=dict(optd["meta"]))
