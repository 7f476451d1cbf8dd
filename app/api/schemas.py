"""The JSON bodies of the HTTP API as pydantic models, for the OpenAPI document only.

The routes parse bodies themselves (orjson, tensors straight into numpy, DESIGN §3):
validating a tensor's `data` field by field through pydantic would cost more than the
step. These models say what the routes accept and answer, so the document (and the
schemathesis contract test run against it) is true; `app.api.openapi` puts them into
`components.schemas` and onto every operation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict


class _Closed(BaseModel):
    """Request bodies whose unknown fields the routes refuse (400 `invalid-body`)."""

    model_config = ConfigDict(extra="forbid")


class Tensor(BaseModel):
    """A tensor in JSON. Requests may also give a bare nested list (shape inferred) or a
    number; `dtype` is informational, values are checked in the session's state dtype."""

    shape: list[int] = Field(description="dimensions, at most 64; [] for a scalar")
    dtype: str = Field("float32", description="float16, bfloat16, float32 or float64")
    data: list[float] = Field(description="the values, flat and row-major")


TensorIn = Tensor | list[Any] | float
# Names are 1 to 512 UTF-8 bytes (OPTD_MAX_NAME_BYTES); a schema counts characters.
Name = Annotated[str, StringConstraints(min_length=1, max_length=512)]
PARAMS_EXAMPLE: JsonDict = {
    "layer.weight": {"shape": [2, 2], "dtype": "float32", "data": [0.1, -0.2, 0.3, 0.4]},
    "layer.bias": [0.0, 0.0],
}
GRADS_EXAMPLE: JsonDict = {
    "layer.weight": {"shape": [2, 2], "dtype": "float32", "data": [0.01, 0.02, -0.01, 0.0]},
    "layer.bias": [0.5, -0.5],
}


CHECKPOINT_EXAMPLE: JsonDict = {  # GET .../state of an SGD session with one parameter
    "version": 0,
    "meta": {
        "format": 1,
        "config": {
            "optimizer": "sgd",
            "hyperparams": {},
            "dtype": "float32",
            "schedule": None,
            "max_grad_norm": None,
            "check_finite": True,
            "groups": [],
        },
        "options": {
            "mode": "async",
            "workers": None,
            "max_staleness": None,
            "staleness_lr": "none",
            "labels": {},
            "ttl_s": None,
        },
        "layout": [["w", [2], 0]],
        "tenant": None,
        "steps": [0],
        "scalars": {},
        "step": 0,
        "last_loss": None,
        "last_lr": None,
        "last_grad_norm": None,
        "create_fingerprint": None,
        "created_at": 1796479962.3,
        "updated_at": 1796479962.3,
    },
    "tensors": {"param/w": {"shape": [2], "dtype": "float32", "data": [1.0, 2.0]}},
}


class Problem(BaseModel):
    """RFC 9457 `application/problem+json`: every error optd answers (DESIGN §3)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:optd:problem:<slug>")
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(None, description="field-level details")
    current_version: int | None = Field(None, description="on 409 stale-gradient and 412")
    retry_after: int | None = Field(None, description="seconds; also the Retry-After header")


class Group(BaseModel):
    """A parameter group: glob patterns on names (first match wins) and the
    hyperparameters that differ from the session's, like torch param_groups."""

    model_config = ConfigDict(extra="allow")

    match: list[str]


class Schedule(BaseModel):
    """A learning-rate schedule (a factor on `lr`, DESIGN §2); its fields by name."""

    model_config = ConfigDict(extra="allow")

    name: Literal["constant", "linear_warmup", "cosine", "inverse_sqrt", "step", "exponential"]


class _Options(_Closed):
    """What both create and PATCH take."""

    hyperparams: dict[str, Any] | None = Field(
        None, description="torch names (GET /v1/optimizers); omitted = default"
    )
    schedule: Schedule | None = None
    max_grad_norm: float | None = Field(None, gt=0, description="global grad-norm clipping")
    check_finite: bool | None = Field(None, description="refuse non-finite gradients (422)")
    max_staleness: int | None = Field(None, ge=0)
    staleness_lr: Literal["none", "inverse"] | None = None
    labels: dict[str, str] | None = Field(None, description="the prefix optd/ is reserved")
    ttl_s: int | None = Field(None, gt=0, le=10 * 365 * 86_400)
    workers: int | None = Field(None, ge=1, description="sync mode: gradients per round")
    min_workers: int | None = Field(None, ge=1, description="sync: close early with this many")
    round_timeout_s: float | None = Field(None, gt=0, le=86_400, description="sync: round timeout")
    worker_lease_s: float | None = Field(None, gt=0, le=86_400, description="sync: member lease")


class SessionCreate(_Options):
    """POST /v1/sessions in JSON. As safetensors, the file's tensors are the params and
    `__metadata__["config"]` holds these fields (without `params`) as a JSON string."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "optimizer": "adam",
                "hyperparams": {"lr": 0.001, "betas": [0.9, 0.999], "amsgrad": False},
                "params": PARAMS_EXAMPLE,
                "dtype": "float32",
                "schedule": {"name": "cosine", "warmup_steps": 100, "total_steps": 10000},
                "max_grad_norm": 1.0,
                "groups": [{"match": ["*.bias"], "weight_decay": 0.0}],
                "mode": "async",
                "labels": {"project": "demo"},
            }
        },
    )

    optimizer: str = Field("adam", description="a name from GET /v1/optimizers")
    params: dict[Name, TensorIn] = Field(min_length=1, description="the initial parameters")
    dtype: Literal["float32", "float64"] = "float32"
    groups: list[Group] | None = None
    mode: Literal["async", "sync"] = "async"
    shards: int | None = Field(None, ge=1, le=64, description="DESIGN §3: sharded sessions")


class SessionPatch(_Options):
    """PATCH /v1/sessions/{id}: `hyperparams` are merged, the rest replaced; optimizer,
    dtype and groups are fixed (422)."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"hyperparams": {"lr": 0.0003}, "labels": {"stage": "2"}}},
    )


class ParamInfo(BaseModel):
    shape: list[int]
    step: int = Field(description="steps this parameter took (torch's per-param step)")


class SessionInfo(BaseModel):
    """A session's config and counters (GET /v1/sessions/{id}, the create response)."""

    model_config = ConfigDict(extra="allow")

    id: str
    optimizer: str
    hyperparams: dict[str, Any] = Field(description="every hyperparameter, defaults filled in")
    dtype: str
    schedule: dict[str, Any] | None
    max_grad_norm: float | None
    check_finite: bool
    groups: list[dict[str, Any]]
    mode: Literal["async", "sync"]
    workers: int | None
    min_workers: int | None = None
    round_timeout_s: float | None = None
    worker_lease_s: float | None = None
    max_staleness: int | None
    staleness_lr: str
    labels: dict[str, str]
    ttl_s: int | None
    version: int = Field(description="also the ETag")
    step: int = Field(description="steps applied to the session")
    lr: float = Field(description="current, after the schedule")
    last_loss: float | None
    num_params: int
    state_bytes: int
    params: dict[str, ParamInfo] | None = Field(description="null in a listing")
    created_at: float
    updated_at: float
    shards: int | list[dict[str, Any]] | None = Field(
        None, description="a sharded session's shard sessions and ranges (DESIGN §3)"
    )
    shard_of: str | None = Field(None, description="a shard session: the session it is part of")
    shard_index: int | None = None


class SessionList(BaseModel):
    sessions: list[SessionInfo]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class StepRequest(_Closed):
    """POST .../step in JSON. As safetensors, the tensors are the gradients and the
    options travel in Optd-* headers or `__metadata__` (strings)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"grads": GRADS_EXAMPLE, "base_version": 0, "worker": "w-3", "loss": 0.25}
        }
    )

    grads: dict[Name, TensorIn] = Field(
        min_length=1,
        description="all parameters or a subset (absent ones are untouched), shapes exact",
    )
    base_version: int | None = Field(None, ge=0, description="the version the grads came from")
    worker: str | None = Field(None, max_length=256, description="sync mode: dedups per round")
    loss: float | None = Field(None, description="kept as last_loss")


class ShardCommit(_Closed):
    """POST .../step on a shard session: the commit of a prepared part (DESIGN §3), with
    `If-Match` = the version prepare answered."""

    prepared: str = Field(description="the token the shard's prepare answered")
    sumsq: list[float | str] = Field(description="every shard's sumsq, concatenated in order")
    tokens: list[str] | None = Field(
        None, description="shard 0's commit: every shard's token, kept for a repair"
    )
    worker: str | None = None
    loss: float | None = None


class Prepare(_Closed):
    """POST .../prepare in JSON: a shard's part of a sharded step (DESIGN §3)."""

    model_config = ConfigDict(json_schema_extra={"example": {"grads": {"w": [0.1, -0.2]}}})

    grads: dict[Name, TensorIn] = Field(description="the shard's pieces, 1-D; {} for none")


class Prepared(BaseModel):
    """POST .../prepare: a shard's part checked and kept for its commit (DESIGN §3)."""

    prepared: str = Field(description="the token its commit names")
    version: int = Field(description="the shard session's version: the commit's If-Match")
    sumsq: list[float | str] = Field(
        description='the part\'s chunks\' squared norms ("NaN"/"Infinity" when not finite)'
    )


class StepResponse(BaseModel):
    version: int
    step: int
    lr: float
    grad_norm: float
    staleness: int | None = Field(description="versions behind, when base_version was given")
    params: dict[str, Tensor] = Field(description="all, or ?return=updated the stepped ones")


class BarrierStatus(BaseModel):
    version: int = Field(description="the round's base version")
    have: int
    need: int


class BarrierPending(BaseModel):
    """202: a sync round that did not close within ?wait= (poll GET .../params)."""

    barrier: BarrierStatus


class Params(BaseModel):
    version: int
    params: dict[str, Tensor]


class ParamsPut(_Closed):
    model_config = ConfigDict(json_schema_extra={"example": {"params": PARAMS_EXAMPLE}})

    params: dict[Name, TensorIn] = Field(
        min_length=1, description="every parameter or a subset, shapes unchanged"
    )


class Version(BaseModel):
    version: int


class Checkpoint(_Closed):
    """A full checkpoint: tensors `<slot>/<param>` (`param/w`, `exp_avg/w`, ...) and the
    session's meta document, as GET .../state exports it."""

    model_config = ConfigDict(json_schema_extra={"example": CHECKPOINT_EXAMPLE})

    version: int | None = None
    meta: dict[str, Any] = Field(description="the meta document (format 1), unchanged")
    tensors: dict[Name, TensorIn]


class StateWritten(BaseModel):
    version: int
    created: bool = Field(description="true (201) when the PUT created the session")


class Optimizers(BaseModel):
    optimizers: list[dict[str, Any]] = Field(
        description="name, hyperparameters' JSON schema, defaults, state slots"
    )
    schedules: list[str]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    store: str = Field(description="memory, redis or cluster")


class HistoryPoint(BaseModel):
    """One committed step (async) or round (sync) of a session (issue #19)."""

    version: int = Field(description="the session's version after this step")
    t: float = Field(description="when it was committed, Unix seconds")
    loss: float | None = Field(description="the loss the step sent (a round: their mean)")
    lr: float | None = Field(description="the learning rate applied, after the schedule")
    grad_norm: float | None = Field(description="global gradient norm, before clipping")
    staleness: int | None = Field(description="versions behind, when base_version was sent")
    worker: str | None = Field(description="the worker the step named")
    contributors: list[str] | None = Field(None, description="a sync round's workers")


class HistoryPage(BaseModel):
    """GET .../history: points after `since`, oldest first. Points older than
    `recent_from` come from the downsampled tail (every `stride`-th version)."""

    id: str
    version: int = Field(description="the session's version now")
    points: list[HistoryPoint]
    next_since: int = Field(description="pass as ?since= for the next page")
    more: bool = Field(description="the page is full: ask again with next_since")
    stride: int = Field(description="the tail's spacing in versions")
    recent_from: int | None = Field(description="the oldest version kept at full resolution")


MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    SessionCreate,
    SessionPatch,
    SessionInfo,
    SessionList,
    StepRequest,
    ShardCommit,
    StepResponse,
    BarrierPending,
    Prepare,
    Prepared,
    Params,
    ParamsPut,
    Version,
    Checkpoint,
    StateWritten,
    Optimizers,
    Health,
    Ready,
    HistoryPoint,
    HistoryPage,
)
