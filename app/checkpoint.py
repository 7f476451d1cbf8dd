"""Parameters and full checkpoints in and out of a session.

A checkpoint is a set of tensors named `<slot>/<param name>` (`param/w`,
`exp_avg/w`, ...) plus the session's meta document (config, layout, per-tensor
step counts, scalar state) and version. As safetensors the meta travels as the
`__metadata__["optd"]` string; as JSON it is `{"version", "meta", "tensors"}`.
Restoring it continues bit-identically.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from app import sessions
from app.core.auth import current_caller
from app.engine import Engine
from app.optim import PARAM
from app.problems import Conflict, InvalidBody, InvalidTensor, NotFound, PreconditionFailed
from app.session import SessionMeta
from app.sessions import check_values
from app.store.base import StoredSession

POLL_S = 0.05


async def get_params(
    engine: Engine, sid: str, names: list[str] | None, min_version: int | None, wait: float
) -> tuple[int, dict[str, np.ndarray]]:
    """Current params; with min_version, wait up to `wait` s for the session to reach it."""
    await engine.load(sid, [])  # another tenant's session is a 404 before any waiting
    if min_version is not None and wait > 0:
        deadline = time.monotonic() + min(wait, engine.settings.max_wait_s)
        while time.monotonic() < deadline:
            stored = await engine.store.load(sid, [])
            if stored.version >= min_version:
                break
            await asyncio.sleep(POLL_S)
    stored, meta = await engine.load(sid, [PARAM])
    state = meta.state(stored.slots)
    wanted = names if names else [s.name for s in meta.layout.specs]
    unknown = [n for n in wanted if n not in meta.layout.index]
    if unknown:
        raise InvalidTensor(f"names: unknown parameter(s) {unknown[:5]}")
    return stored.version, {n: state.view(PARAM, n) for n in wanted}


async def put_params(
    engine: Engine, sid: str, params: Mapping[str, np.ndarray], if_match: int | None
) -> int:
    """Replace some or all parameter values; the optimizer state stays as it is."""
    if not params:
        raise InvalidTensor("params: nothing to write")
    async with engine.lock(sid):
        while True:
            # every slot: the commit below is a full write (a step log needs one)
            stored, meta = await engine.load(sid, take=True)
            if if_match is not None and if_match != stored.version:
                raise PreconditionFailed(
                    f"If-Match {if_match} but the session is at version {stored.version}",
                    current_version=stored.version,
                )
            dtype = np.dtype(meta.config.dtype)
            check_values("params", params, dtype)
            flat = stored.slots[PARAM]
            for name, arr in params.items():
                i = meta.layout.index.get(name)
                if i is None:
                    raise InvalidTensor(f"params: unknown parameter {name!r}")
                spec = meta.layout.specs[i]
                if tuple(arr.shape) != spec.shape:
                    raise InvalidTensor(
                        f"params: {name!r} has shape {list(arr.shape)}, expected {list(spec.shape)}"
                    )
                flat[spec.offset : spec.offset + spec.size] = arr.reshape(-1)
            meta.updated_at = time.time()
            try:
                return await engine.store.commit(
                    sid, stored.version, meta.to_bytes(), stored.slots, None, meta.options.ttl_s
                )
            except Conflict:
                if if_match is not None:
                    raise PreconditionFailed("the session changed during the write") from None


async def export_state(
    engine: Engine, sid: str
) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
    stored, meta = await engine.load(sid)
    state = meta.state(stored.slots)
    tensors = {
        f"{slot}/{s.name}": state.view(slot, s.name)
        for slot in stored.slots
        for s in meta.layout.specs
    }
    return stored.version, meta.to_document(), tensors


async def import_state(
    engine: Engine, sid: str, doc: Any, tensors: Mapping[str, np.ndarray], if_match: int | None
) -> tuple[int, bool]:
    """Restore a checkpoint into `sid` (created when absent). Returns (version, created)."""
    if not isinstance(doc, dict):
        raise InvalidBody("checkpoint: the meta document must be a JSON object")
    try:
        meta = SessionMeta.from_document(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidBody(
            f"checkpoint: malformed meta document ({exc}); export one with GET .../state"
        ) from None
    caller = current_caller.get()
    meta.tenant = caller.tenant  # whoever restores a checkpoint owns the session
    sessions.check_max_params(caller, meta.layout.total)  # before allocating anything
    cfg = meta.config.resolve()
    n = len(meta.layout.specs)
    if meta.steps.size != n or any(v.size != n for v in meta.scalars.values()):
        raise InvalidBody("checkpoint: steps/scalars do not match the layout")
    if n and (int(meta.layout.groups.max()) > len(meta.config.groups) or meta.steps.min() < 0):
        raise InvalidBody("checkpoint: a group index or a step count is out of range")
    if not all(np.isfinite(v).all() for v in meta.scalars.values()):
        raise InvalidBody("checkpoint: scalar state must be finite")
    expected = (PARAM, *cfg.slot_names())
    for slot in expected:  # every tensor present and sized, before anything is allocated
        for s in meta.layout.specs:
            arr = tensors.get(f"{slot}/{s.name}")
            if arr is None:
                raise InvalidTensor(f"checkpoint: tensor {slot}/{s.name!r} is missing")
            if arr.size != s.size:
                raise InvalidTensor(
                    f"checkpoint: {slot}/{s.name!r} has {arr.size} values, expected {s.size}"
                )
    if set(meta.scalars) != set(cfg.optimizer.scalar_slots):
        raise InvalidBody(f"checkpoint: scalars must be {sorted(cfg.optimizer.scalar_slots)}")
    slots: dict[str, np.ndarray] = {}
    for slot in expected:
        flat = np.empty(meta.layout.total, dtype=cfg.dtype)
        for s in meta.layout.specs:
            with np.errstate(over="ignore"):
                flat[s.offset : s.offset + s.size] = tensors[f"{slot}/{s.name}"].reshape(-1)
        if not np.isfinite(flat).all():
            raise InvalidTensor(f"checkpoint: slot {slot!r} contains NaN or Inf")
        slots[slot] = flat
    meta.updated_at = time.time()
    async with engine.lock(sid):
        try:
            stored: StoredSession | None = await engine.store.load(sid, [])
        except NotFound:
            stored = None
        if stored is not None and not caller.may_see(SessionMeta.from_bytes(stored.meta).tenant):
            raise NotFound(f"session {sid} not found")  # another tenant's id: as if absent
        if stored is None:
            if if_match is not None:
                raise NotFound(f"session {sid} not found (If-Match needs an existing session)")
            await sessions.reserve(engine, caller, meta.layout.total, sessions.state_bytes(meta))
            try:
                await engine.store.create(
                    sid, meta.to_bytes(), slots, sessions.store_labels(meta), meta.options.ttl_s
                )
            except BaseException:
                await sessions.release(engine, caller.tenant, sessions.state_bytes(meta))
                raise
            return 0, True
        if if_match is not None and if_match != stored.version:
            raise PreconditionFailed(
                f"If-Match {if_match} but the session is at version {stored.version}",
                current_version=stored.version,
            )
        version = await engine.store.commit(
            sid, stored.version, meta.to_bytes(), slots, None, meta.options.ttl_s
        )
        return version, False
