"""Sessions as resources: create, describe, list, patch, delete; tenants' quotas."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.core.auth import TENANT_LABEL, Caller
from app.engine.meta import SessionMeta, SessionOptions
from app.engine.txn import Commit, Loaded, Transactions
from app.ids import new_sid, sid_for_key
from app.optim import PARAM, Layout, OptimState, parse_config
from app.optim.base import validation_problem
from app.problems import (
    Conflict,
    IdempotencyMismatch,
    InvalidBody,
    InvalidConfig,
    InvalidTensor,
    NotFound,
    RateLimited,
)

CONFIG_KEYS = (
    "optimizer",
    "hyperparams",
    "dtype",
    "schedule",
    "max_grad_norm",
    "check_finite",
    "groups",
)
OPTION_KEYS = (
    "mode",
    "workers",
    "min_workers",
    "round_timeout_s",
    "worker_lease_s",
    "max_staleness",
    "staleness_lr",
    "labels",
    "ttl_s",
)
PATCHABLE = (
    "hyperparams",
    "schedule",
    "max_grad_norm",
    "check_finite",
    "max_staleness",
    "staleness_lr",
    "labels",
    "ttl_s",
    "workers",
    "min_workers",
    "round_timeout_s",
    "worker_lease_s",
)


def split_body(body: Mapping[str, Any]) -> tuple[dict[str, Any], SessionOptions]:
    unknown = set(body) - set(CONFIG_KEYS) - set(OPTION_KEYS) - {"params"}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise InvalidConfig(
            f"unknown field(s): {names}",
            errors=[{"loc": k, "msg": "unknown field"} for k in sorted(unknown)],
        )
    config = {k: body[k] for k in CONFIG_KEYS if k in body}
    try:
        options = SessionOptions.model_validate({k: body[k] for k in OPTION_KEYS if k in body})
    except ValidationError as exc:
        raise validation_problem(exc, "") from None
    return config, options


def flatten(layout: Layout, tensors: Mapping[str, np.ndarray], dtype: Any) -> np.ndarray:
    flat = np.empty(layout.total, dtype=dtype)
    for spec in layout.specs:
        arr = tensors[spec.name]
        if arr.size != spec.size:
            raise InvalidTensor(f"{spec.name!r}: expected {spec.size} values, got {arr.size}")
        flat[spec.offset : spec.offset + spec.size] = arr.reshape(-1)
    return flat


def check_values(what: str, tensors: Mapping[str, np.ndarray], dtype: Any) -> None:
    for name, arr in tensors.items():
        with np.errstate(over="ignore"):
            ok = bool(np.isfinite(arr.astype(dtype, copy=False)).all())
        if not ok:
            raise InvalidTensor(
                f"{what}: {name!r} contains NaN or Inf (or overflows {np.dtype(dtype).name})",
                errors=[{"loc": f"{what}.{name}", "msg": "non-finite value"}],
            )


def state_bytes(meta: SessionMeta) -> int:
    cfg = meta.config.resolve()
    return meta.layout.total * cfg.dtype.itemsize * (1 + len(cfg.slot_names()))


def store_labels(meta: SessionMeta) -> dict[str, str]:
    """The labels the store filters on: the user's plus the owning tenant's."""
    if meta.tenant is None:
        return dict(meta.options.labels)
    return {**meta.options.labels, TENANT_LABEL: meta.tenant}


def check_max_params(caller: Caller, total: int) -> None:
    limit = caller.limits.max_params
    if caller.tenant is not None and limit is not None and total > limit:
        raise RateLimited(
            f"tenant {caller.tenant!r} may have at most {limit} parameters per session; "
            f"this one has {total}",
            retry_after=3600,
        )


async def reserve(txn: Transactions, caller: Caller, total: int, nbytes: int) -> None:
    """Count a new session against the tenant's quotas (429 when over), atomically in the
    store so racing creates cannot pass the limit."""
    if caller.tenant is None:
        return
    check_max_params(caller, total)
    lim, tenant = caller.limits, caller.tenant
    if lim.max_sessions is None and lim.max_state_bytes is None:
        return
    # (a session that expires by TTL is not subtracted: see DESIGN §8, tenants)
    if not await txn.store.quota_add(tenant, 1, nbytes, lim.max_sessions, lim.max_state_bytes):
        raise RateLimited(
            f"tenant {tenant!r} is at its quota (limits: {lim.max_sessions} sessions, "
            f"{lim.max_state_bytes} state bytes): delete sessions or ask for a larger quota",
            retry_after=60,
        )


async def release(txn: Transactions, tenant: str | None, nbytes: int) -> None:
    if tenant is not None:
        await txn.store.quota_add(tenant, -1, -nbytes, None, None)


async def delete(txn: Transactions, sid: str, caller: Caller) -> None:
    cur = await txn.read(sid, caller, [])  # 404 for another tenant's session
    if not await txn.store.delete(sid):
        raise NotFound(f"session {sid!r} does not exist")
    await release(txn, cur.meta.tenant, state_bytes(cur.meta))
    txn.metrics.sessions_deleted.inc()


async def create(
    txn: Transactions,
    caller: Caller,
    body: Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    idempotency: tuple[str, str] | None = None,
) -> tuple[str, int, SessionMeta, bool]:
    """A new session, or — for a retried create with the same Idempotency-Key — the one
    that key already created (its id is derived from the key, so no extra record is
    needed). Returns (id, version, meta, replayed)."""
    raw_config, options = split_body(body)
    config = parse_config(raw_config)
    cfg = config.resolve()
    if not params:
        raise InvalidTensor("params: a session needs at least one parameter")
    if len(params) > txn.settings.max_tensors:
        raise InvalidTensor(f"params: at most {txn.settings.max_tensors} tensors per session")
    total = sum(int(v.size) for v in params.values())
    check_max_params(caller, total)  # before the flat state is allocated
    check_values("params", params, cfg.dtype)
    layout = Layout.build({k: tuple(v.shape) for k, v in params.items()}, cfg.group_of)
    flat = flatten(layout, params, cfg.dtype)
    state = OptimState.create(layout, cfg.optimizer, cfg.group_hps, cfg.slot_names(), flat)
    meta = SessionMeta(config, options, layout, state.steps, state.scalars)
    meta.tenant = caller.tenant
    sid = new_sid()
    if idempotency is not None:
        sid, meta.create_fingerprint = sid_for_key(idempotency[0]), idempotency[1]
    nbytes = state_bytes(meta)
    await reserve(txn, caller, layout.total, nbytes)
    try:
        await txn.store.create(sid, meta.to_bytes(), state.slots, store_labels(meta), options.ttl_s)
    except BaseException as exc:
        await release(txn, caller.tenant, nbytes)
        if idempotency is None or not isinstance(exc, Conflict):
            raise
        cur = await txn.read(sid, caller, [])
        if cur.meta.create_fingerprint != idempotency[1]:
            raise IdempotencyMismatch(
                f"Idempotency-Key {idempotency[0]!r} created a session from another body",
                id=sid,  # the caller sees this session anyway: a worker joining by name adopts it
            ) from None
        return sid, cur.version, cur.meta, True
    txn.metrics.sessions_created.inc()
    return sid, 0, meta, False


def describe(sid: str, version: int, meta: SessionMeta) -> dict[str, Any]:
    cfg = meta.config.resolve()
    hp = cfg.group_hps[0]
    return {
        "id": sid,
        "optimizer": meta.config.optimizer,
        "hyperparams": hp.model_dump(mode="json"),
        "dtype": meta.config.dtype,
        "schedule": meta.config.schedule.model_dump(mode="json") if meta.config.schedule else None,
        "max_grad_norm": meta.config.max_grad_norm,
        "check_finite": meta.config.check_finite,
        "groups": [g.model_dump(mode="json") for g in meta.config.groups],
        **meta.options.model_dump(mode="json"),
        "version": version,
        "step": meta.step,
        "lr": hp.lr * cfg.lr_factor(meta.step),
        "last_loss": meta.last_loss,
        "num_params": meta.layout.total,
        "state_bytes": state_bytes(meta),
        "tenant": meta.tenant,
        "params": {
            s.name: {"shape": list(s.shape), "step": int(meta.steps[i])}
            for i, s in enumerate(meta.layout.specs)
        },
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
    }


async def patch(
    txn: Transactions, sid: str, caller: Caller, body: Mapping[str, Any], if_match: int | None
) -> tuple[int, SessionMeta]:
    bad = set(body) - set(PATCHABLE)
    if bad:
        raise InvalidConfig(
            f"cannot change {', '.join(sorted(bad))} of a session; PATCH takes: "
            f"{', '.join(PATCHABLE)} (create a new session or PUT its state for the rest)",
            errors=[{"loc": k, "msg": "not patchable"} for k in sorted(bad)],
        )

    async def change(cur: Loaded) -> Commit[SessionMeta]:
        meta = cur.meta
        raw = meta.config.model_dump(mode="json")
        for key in ("schedule", "max_grad_norm", "check_finite"):
            if key in body:
                raw[key] = body[key]
        if "hyperparams" in body:
            if not isinstance(body["hyperparams"], dict):
                raise InvalidConfig("hyperparams: must be an object of torch names")
            raw["hyperparams"] = {**raw["hyperparams"], **body["hyperparams"]}
        config = parse_config(raw)
        cfg = config.resolve()
        opts = meta.options.model_dump() | {
            k: body[k] for k in body if k in SessionOptions.model_fields
        }
        try:
            meta.options = SessionOptions.model_validate(opts)
        except ValidationError as exc:
            raise validation_problem(exc, "") from None
        meta.config = config
        new_slots: dict[str, np.ndarray] = {}
        for slot in cfg.slot_names():
            if slot not in cur.slots:  # e.g. amsgrad switched on: start like torch, at zeros
                fresh = OptimState.create(
                    meta.layout, cfg.optimizer, cfg.group_hps, [slot], cur.slots[PARAM]
                )
                new_slots[slot] = fresh.slots[slot]
        meta.updated_at = time.time()
        # every slot, not just the new ones: a store with a step log snapshots here
        return Commit(meta, {**cur.slots, **new_slots}, meta)

    return await txn.write(sid, caller, change, if_match=if_match)


def parse_label_filter(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidBody(f"label filter must look like key=value, got {item!r}")
        labels[key] = value
    for key in labels:
        if key.startswith("optd/"):
            raise InvalidBody(f"label {key!r}: the prefix optd/ is reserved")
    return labels


async def list_page(
    txn: Transactions, caller: Caller, cursor: str | None, limit: int, label: list[str]
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the sessions the caller may see, described without their params."""
    labels = parse_label_filter(label)
    if caller.tenant is not None and not caller.admin:
        labels[TENANT_LABEL] = caller.tenant  # a tenant lists its own sessions only
    page, next_cursor = await txn.store.list(cursor, limit, labels or None)
    out = []
    for summary in page:
        meta = SessionMeta.from_bytes(summary.meta)
        out.append(describe(summary.id, summary.version, meta) | {"params": None})
    return out, next_cursor
