"""Sessions as resources: create, describe, list, patch, delete; tenants' quotas."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.core.auth import TENANT_LABEL, Caller
from app.engine.meta import SessionMeta, SessionOptions
from app.engine.quotas import (
    Charge,
    check_max_params,
    created,
    release,
    reserve,
    state_bytes,
)
from app.engine.txn import Commit, Hidden, Loaded, Transactions
from app.ids import new_sid, sid_for_key
from app.optim import PARAM, Layout, OptimConfig, OptimState, parse_config
from app.optim.base import validation_problem
from app.problems import (
    Conflict,
    IdempotencyMismatch,
    InvalidBody,
    InvalidConfig,
    InvalidTensor,
    NotFound,
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
    "shards",
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


def store_labels(meta: SessionMeta) -> dict[str, str]:
    return meta.store_labels()


async def delete(txn: Transactions, sid: str, caller: Caller) -> None:
    cur = await txn.read(sid, caller, [])  # 404 for another tenant's session
    tenant = cur.meta.tenant
    # read before the delete: a point charged in between stays charged (too high, never
    # too low; a recount settles it)
    nbytes = state_bytes(cur.meta) + (await txn.store.history_charged(sid) if tenant else 0)
    if not await release(txn, tenant, nbytes, txn.store.delete(sid)):
        raise NotFound(f"session {sid!r} does not exist")
    txn.metrics.sessions_deleted.inc()


def build(
    txn: Transactions,
    caller: Caller,
    config: OptimConfig,
    options: SessionOptions,
    params: Mapping[str, np.ndarray],
) -> tuple[SessionMeta, OptimState]:
    """A new session's meta and state from a validated config and its initial params."""
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
    return meta, state


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
    meta, state = build(txn, caller, parse_config(raw_config), options, params)
    sid = new_sid()
    if idempotency is not None:
        # per tenant: another tenant's create under the same key gets another id
        sid = sid_for_key(idempotency[0], scope=caller.tenant or "")
        meta.create_fingerprint = idempotency[1]
    if await store_new(txn, caller, sid, meta, state.slots, idempotency):
        return sid, 0, meta, False
    cur = await txn.read(sid, caller, [])
    return sid, cur.version, cur.meta, True


async def store_new(
    txn: Transactions,
    caller: Caller,
    sid: str,
    meta: SessionMeta,
    slots: Mapping[str, np.ndarray],
    idempotency: tuple[str, str] | None,
) -> bool:
    """Store a new session under the tenant's quota: True when created, False when the
    create's Idempotency-Key already created it (same body), else a problem."""
    nbytes = state_bytes(meta)
    await reserve(txn, caller, meta.layout.total, nbytes)
    try:
        await txn.store.create(sid, meta.to_bytes(), slots, store_labels(meta), meta.options.ttl_s)
    except BaseException as exc:
        await created(txn, caller.tenant, nbytes, ok=False)
        if idempotency is None or not isinstance(exc, Conflict):
            raise
        try:
            cur = await txn.read(sid, caller, [])
        except Hidden:  # the id was taken under another tenant (PUT state): never name it
            raise Conflict(
                f"Idempotency-Key {idempotency[0]!r} cannot create a session; use a new key"
            ) from None
        if cur.meta.create_fingerprint != idempotency[1]:
            raise IdempotencyMismatch(
                f"Idempotency-Key {idempotency[0]!r} created a session from another body",
                id=sid,  # the caller sees this session anyway: a worker joining by name adopts it
            ) from None
        return False
    await created(txn, caller.tenant, nbytes, ok=True)
    txn.metrics.sessions_created.inc()
    return True


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
        **{  # shards, shard_of, shard_index only where set (DESIGN §3)
            k: v
            for k, v in meta.options.model_dump(mode="json").items()
            if v is not None or not k.startswith("shard")
        },
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

    quota = Charge(txn, caller)

    async def change(cur: Loaded) -> Commit[SessionMeta]:
        meta = cur.meta
        old_bytes = state_bytes(meta)
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
        for slot in cfg.slot_names() if PARAM in cur.slots else ():  # a sharded: no state
            if slot not in cur.slots:  # e.g. amsgrad switched on: start like torch, at zeros
                fresh = OptimState.create(
                    meta.layout, cfg.optimizer, cfg.group_hps, [slot], cur.slots[PARAM]
                )
                new_slots[slot] = fresh.slots[slot]
        meta.updated_at = time.time()
        await quota.set(meta.tenant, old_bytes, state_bytes(meta))  # 429 before the commit
        # every slot, not just the new ones: a store with a step log snapshots here
        return Commit(meta, {**cur.slots, **new_slots}, meta)

    return await quota.run(txn.write(sid, caller, change, if_match=if_match))


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
        if meta.options.shard_of is not None:
            continue  # a sharded session is listed once, as itself (DESIGN §3)
        out.append(describe(summary.id, summary.version, meta) | {"params": None})
    return out, next_cursor
