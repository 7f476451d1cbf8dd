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

from app.core.auth import Caller
from app.engine import quotas, sessions
from app.engine.meta import SessionMeta
from app.engine.sessions import check_values
from app.engine.txn import Commit, Hidden, Loaded, Transactions
from app.optim import PARAM
from app.problems import InvalidBody, InvalidTensor, NotFound

POLL_S = 0.05


async def get_params(
    txn: Transactions,
    sid: str,
    caller: Caller,
    names: list[str] | None,
    min_version: int | None,
    wait: float,
) -> tuple[int, dict[str, np.ndarray], SessionMeta]:
    """Current params; with min_version, wait up to `wait` s for the session to reach it."""
    await txn.read(sid, caller, [])  # another tenant's session is a 404 before any waiting
    if min_version is not None and wait > 0:
        deadline = time.monotonic() + min(wait, txn.settings.max_wait_s)
        while time.monotonic() < deadline:
            if await txn.version(sid) >= min_version:
                break
            await asyncio.sleep(POLL_S)
    cur = await txn.read(sid, caller, [PARAM])
    state = cur.meta.state(cur.slots)
    wanted = names if names else [s.name for s in cur.meta.layout.specs]
    unknown = [n for n in wanted if n not in cur.meta.layout.index]
    if unknown:
        raise InvalidTensor(f"names: unknown parameter(s) {unknown[:5]}")
    return cur.version, {n: state.view(PARAM, n) for n in wanted}, cur.meta


async def put_params(
    txn: Transactions,
    sid: str,
    caller: Caller,
    params: Mapping[str, np.ndarray],
    if_match: int | None,
) -> int:
    """Replace some or all parameter values; the optimizer state stays as it is."""
    if not params:
        raise InvalidTensor("params: nothing to write")

    async def replace(cur: Loaded) -> Commit[None]:
        meta = cur.meta
        dtype = np.dtype(meta.config.dtype)
        check_values("params", params, dtype)
        flat = cur.slots[PARAM]
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
        # every slot: this is a full write (a store with a step log snapshots here)
        return Commit(meta, cur.slots, None)

    version, _ = await txn.write(sid, caller, replace, if_match=if_match)
    return version


async def export_state(
    txn: Transactions, sid: str, caller: Caller
) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
    cur = await txn.read(sid, caller)
    state = cur.meta.state(cur.slots)
    tensors = {
        f"{slot}/{s.name}": state.view(slot, s.name)
        for slot in cur.slots
        for s in cur.meta.layout.specs
    }
    return cur.version, cur.meta.to_document(), tensors


async def import_state(
    txn: Transactions,
    sid: str,
    caller: Caller,
    doc: Any,
    tensors: Mapping[str, np.ndarray],
    if_match: int | None,
) -> tuple[int, bool]:
    """Restore a checkpoint into `sid` (created when absent). Returns (version, created)."""
    if not isinstance(doc, dict):
        raise InvalidBody("checkpoint: the meta document must be a JSON object")
    try:
        meta = SessionMeta.from_document(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # e.g. scalars: 1.0
        raise InvalidBody(
            f"checkpoint: malformed meta document ({exc}); export one with GET .../state"
        ) from None
    meta.tenant = caller.tenant  # a new session is the restorer's (an existing one keeps its)
    quotas.check_max_params(caller, meta.layout.total)  # before allocating anything
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

    quota = quotas.Charge(txn, caller)

    async def restore(cur: Loaded) -> Commit[None]:
        # an admin restoring a tenant's session must not take it from its tenant
        meta.tenant = cur.meta.tenant
        await quota.set(meta.tenant, quotas.state_bytes(cur.meta), quotas.state_bytes(meta))
        return Commit(meta, slots, None)

    try:
        write = txn.write(sid, caller, restore, if_match=if_match, slots=[])
        version, _ = await quota.run(write)
        return version, False
    except Hidden:
        raise  # another tenant's id: as if absent, and never created over
    except NotFound:
        if if_match is not None:
            raise NotFound(
                f"session {sid} not found (If-Match needs an existing session)"
            ) from None
    meta.tenant = caller.tenant
    nbytes = quotas.state_bytes(meta)
    await quotas.reserve(txn, caller, meta.layout.total, nbytes)
    try:
        await txn.store.create(
            sid, meta.to_bytes(), slots, sessions.store_labels(meta), meta.options.ttl_s
        )
    except BaseException:
        await quotas.created(txn, caller.tenant, nbytes, ok=False)
        raise
    await quotas.created(txn, caller.tenant, nbytes, ok=True)
    return 0, True
