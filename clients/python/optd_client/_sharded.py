"""The step of a sharded session (DESIGN §3 "Sharded sessions"), as a flow (see `_retry`).

1. Prepare every shard in parallel with its part of the gradient; each answers a token,
   its version and the dot products of its chunks (`sumsq`).
2. Versions that differ mean another client's step is between its commits: wait a
   little and prepare the shards that are behind again (up to 10 s, then
   `ShardsDivergedError`).
3. Commit shard 0 (`If-Match: "v"`, every shard's `sumsq` in shard order), then the
   others in parallel. A 412 from shard 0: another step took v + 1, nothing of ours was
   applied, start again at 1. `prepare-expired`: prepare that shard again, commit it
   with the same `sumsq` and `If-Match`. Connection errors: the same request again
   (same Idempotency-Key and body), as every request (`_retry.exchange`).
4. Assemble whole tensors from the parts.

A step that raises after its first commit may be applied on some shards only; the
handle keeps it (`SessionState.pending`) and its next `step()` first finishes it (the
same requests again, answered from their idempotency records where they were applied).
If that call's gradients are the failed step's, they are not applied a second time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from optd_client import _compress, _wire
from optd_client._core import Array, CoreBase, float_or_none, int_or_none
from optd_client._retry import Flow, Gather, Sleep, catch, exchange
from optd_client._session import SessionState
from optd_client._shards import Commit, Layout, Pending, Shard, assemble, digest, split
from optd_client.errors import (
    NotFoundError,
    OptdError,
    PreconditionFailedError,
    PrepareExpiredError,
    ShardsDivergedError,
    TransportError,
)
from optd_client.types import StepInfo

DIVERGED_WAIT_S = 10.0
"""How long the shards' versions may differ (another client between its commits)."""
EMPTY_PART = b'{"grads":{}}'
"""The prepare body of a shard none of whose tensors has a gradient (it commits too)."""
MAX_REPREPARE = 5
REPAIR_AFTER_S = 0.5
"""How long the shards' versions may differ before a step repairs another's (its client
may still be committing)."""
"""`prepare-expired` answers in a row for one commit before it is an error."""


@dataclass(frozen=True)
class Prepared:
    token: str
    version: int
    sumsq: list[Any]


def _prepare(core: CoreBase, s: SessionState, shard: Shard, body: bytes) -> Flow[Prepared]:
    kind = _wire.JSON if body == EMPTY_PART else core.tensor_type
    req = core.request("POST", core._path(shard.id, "/prepare"), content=body, content_type=kind)
    s.sent += len(body)
    response = yield from exchange(core.policy, req, core.owners)
    doc = response.json()
    version = int_or_none(doc.get("version"))
    if not isinstance(doc.get("prepared"), str) or version is None:
        raise ValueError(f"malformed prepare answer from shard {shard.id}: {doc!r:.200}")
    return Prepared(doc["prepared"], version, list(doc.get("sumsq") or []))


def _prepare_all(
    core: CoreBase, s: SessionState, layout: Layout, bodies: list[bytes], which: Iterable[int]
) -> Flow[dict[int, Prepared]]:
    ks = list(which)
    flows = tuple(catch(_prepare(core, s, layout.shards[k], bodies[k])) for k in ks)
    outcomes: list[Prepared | OptdError] = yield Gather(flows)
    for out in outcomes:
        if isinstance(out, OptdError):
            raise out
    return {k: out for k, out in zip(ks, outcomes, strict=True) if isinstance(out, Prepared)}


def _commit(
    core: CoreBase, s: SessionState, shard: Shard, p: Pending, c: Commit
) -> Flow[httpx.Response]:
    for _ in range(MAX_REPREPARE):
        fields = {"prepared": c.token, "sumsq": p.sumsq, **p.extra}
        if shard.index == 0 and p.tokens:  # kept by shard 0: what repairs this step
            fields["tokens"] = p.tokens
        body = _wire.dumps(fields)
        headers = {"if-match": f'"{p.version}"', "idempotency-key": c.key}
        if p.params_dtype != "float32":
            headers["optd-response-dtype"] = p.params_dtype
        req = core.request(
            "POST", core._path(shard.id, "/step"), content=body, content_type=_wire.JSON,
            accept=core.tensor_type, headers=headers,
        )  # fmt: skip
        s.sent += len(body)
        try:
            response = yield from exchange(core.policy, req, core.owners)
        except PrepareExpiredError:  # prepare again; a new body needs a new key
            c.token = (yield from _prepare(core, s, shard, c.part)).token
            c.key = str(uuid.uuid4())
            continue
        s.received += len(response.content)
        return response
    raise PrepareExpiredError(
        f"shard {shard.id}: {MAX_REPREPARE} prepared gradients in a row expired before "
        "their commit",
        status=409,
    )


def _outcome_unknown(exc: OptdError) -> bool:
    """Whether a failed commit may still have been applied (or may apply when re-sent)."""
    status = exc.status
    return isinstance(exc, TransportError) or status is None or status >= 500 or status in (
        408, 409, 429,
    )  # fmt: skip


def _commit_all(
    core: CoreBase, s: SessionState, layout: Layout, p: Pending
) -> Flow[dict[str, Array] | None]:
    """Commit what `p` has left; None when shard 0 refused the version (412: nothing of
    this step was applied). Raises with `s.pending = p` while some commit may be owed."""
    s.pending = p
    if p.commits and p.commits[0].index == 0:
        try:
            response = yield from _commit(core, s, layout.shards[0], p, p.commits[0])
        except PreconditionFailedError:
            s.pending = None
            return None
        except OptdError as exc:
            if not _outcome_unknown(exc):
                s.pending = None
            raise
        p.commits.pop(0)
        doc, p.parts[0] = core._tensors(response, "params")
        version = int_or_none(doc.get("version"))
        p.first = StepInfo(
            version=version if version is not None else p.version + 1,
            step=int_or_none(doc.get("step")),
            lr=float_or_none(doc.get("lr")),
            grad_norm=float_or_none(doc.get("grad_norm")),
            staleness=int_or_none(doc.get("staleness")),
            replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
        )
    todo = p.commits
    flows = tuple(catch(_commit(core, s, layout.shards[c.index], p, c)) for c in todo)
    outcomes: list[httpx.Response | OptdError] = yield Gather(flows)
    failed: list[tuple[Commit, OptdError]] = []
    for c, out in zip(todo, outcomes, strict=True):
        if isinstance(out, OptdError):
            failed.append((c, out))
        else:
            p.parts[c.index] = core._tensors(out, "params")[1]
    p.commits = [c for c, _ in failed]
    if failed:
        c, err = failed[0]
        if not any(isinstance(e, PreconditionFailedError | NotFoundError) for _, e in failed):
            raise err  # kept in s.pending: the next step() sends these commits again
        s.pending = None
        raise ShardsDivergedError(
            f"shard {layout.shards[c.index].id} refused the commit of version {p.version} "
            f"after shard 0 took it ({err}); the session is half-applied: restore the "
            "shards from checkpoints (DESIGN §3, sharded sessions)",
            status=err.status,
            problem={"version": p.version, "shard": layout.shards[c.index].id},
        ) from err
    s.pending = None
    assert p.first is not None
    s.version, s.last = p.first.version, p.first
    return assemble(layout, [p.parts.get(k, {}) for k in range(len(layout.shards))])


def _repair(core: CoreBase, s: SessionState, layout: Layout) -> Flow[None]:
    """Finish a step another client left half-applied (DESIGN §3 "Repair"): the session
    info's `repair` names it; commit each shard still one version behind with its token."""
    response = yield from exchange(core.policy, core.request("GET", core._path(s.id)), core.owners)
    info = response.json()
    repair = info.get("repair")
    if not isinstance(repair, dict) or not isinstance(info.get("shards"), list):
        return
    version = int_or_none(repair.get("version"))
    tokens, sumsq = repair.get("tokens"), repair.get("sumsq")
    if version is None or not isinstance(tokens, list) or not isinstance(sumsq, list):
        return
    extra = {k: repair[k] for k in ("loss", "worker") if repair.get(k) is not None}
    for doc in info["shards"]:
        k = int_or_none(doc.get("index"))
        behind = int_or_none(doc.get("version")) == version - 1
        if not behind or k is None or not 0 <= k < min(len(tokens), len(layout.shards)):
            continue
        body = _wire.dumps({"prepared": tokens[k], "sumsq": sumsq, **extra})
        headers = {"if-match": f'"{version - 1}"', "idempotency-key": str(uuid.uuid4())}
        req = core.request(
            "POST", core._path(layout.shards[k].id, "/step"), content=body,
            content_type=_wire.JSON, headers=headers,
        )  # fmt: skip
        try:
            yield from exchange(core.policy, req, core.owners)
        except PreconditionFailedError:
            continue  # another client repaired it first
        except PrepareExpiredError as exc:
            raise ShardsDivergedError(
                f"shard {layout.shards[k].id} is one step behind the others and that step's "
                "part is gone with its client (or the shard's owner): it cannot be finished; "
                "restore the shards from checkpoints (DESIGN §3, sharded sessions)",
                status=exc.status,
                problem={"version": version, "shard": layout.shards[k].id},
            ) from exc


def step(
    core: CoreBase,
    s: SessionState,
    grads: dict[str, Array],
    worker: str | None,
    loss: float | None,
    grad_dtype: _compress.GradDtype = "float32",
    params_dtype: str = "float32",
    block: int = _compress.DEFAULT_BLOCK,
) -> Flow[dict[str, Array]]:
    layout = s.layout
    if layout is None:
        raise ValueError(f"{s.id} is not a sharded session")
    if s.pending is not None:  # this handle's last step is not on every shard yet
        retried = s.pending.fingerprint == digest(grads)
        done = yield from _commit_all(core, s, layout, s.pending)
        if done is not None and retried:
            return done
    parts = split(layout, grads)
    bodies = [core.grads_body(p, {}, grad_dtype, block) if p else EMPTY_PART for p in parts]
    extra = {"loss": None if loss is None else float(loss), "worker": worker}
    extra = {k: v for k, v in extra.items() if v is not None}
    every = range(len(layout.shards))
    prepared = yield from _prepare_all(core, s, layout, bodies, every)
    began, pause = time.monotonic(), 0.01
    deadline = began + DIVERGED_WAIT_S
    while True:
        versions = [prepared[k].version for k in every]
        top = max(versions)
        if min(versions) != top:  # another client's step is between its commits
            if time.monotonic() >= deadline:
                raise ShardsDivergedError(
                    f"the shards of {s.id} stayed at different versions {versions} for "
                    f"{DIVERGED_WAIT_S:g} s: a step of another client is half-applied "
                    "(restore the shards from checkpoints if it died; DESIGN §3)",
                    problem={"versions": versions},
                )
            yield Sleep(pause)
            pause = min(pause * 2, 0.5)
            if time.monotonic() - began >= REPAIR_AFTER_S:  # its client may be gone
                yield from _repair(core, s, layout)
            behind = [k for k in every if versions[k] < top]
            prepared |= yield from _prepare_all(core, s, layout, bodies, behind)
            continue
        sumsq = [x for k in every for x in prepared[k].sumsq]
        commits = [Commit(k, bodies[k], prepared[k].token, str(uuid.uuid4())) for k in every]
        p = Pending(top, sumsq, extra, commits, params_dtype)
        p.tokens = [prepared[k].token for k in every]
        try:
            params = yield from _commit_all(core, s, layout, p)
        except BaseException:
            if s.pending is p:  # to tell a retry of this step from a new one
                p.fingerprint = digest(grads)
            raise
        if params is not None:
            return params
        # 412 from shard 0: another step took version top + 1; prepare again
        prepared = yield from _prepare_all(core, s, layout, bodies, every)
        began, pause = time.monotonic(), 0.01
        deadline = began + DIVERGED_WAIT_S
