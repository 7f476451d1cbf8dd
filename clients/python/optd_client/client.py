"""The blocking client. Every method runs a flow from `_core`; only the I/O is here."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, Unpack

import httpx

from optd_client._compress import DEFAULT_BLOCK, GradDtype
from optd_client._core import Array
from optd_client._flows import Core
from optd_client._retry import Flow, Gather, Sleep
from optd_client._session import ClientOptions, SessionBase
from optd_client._shards import layout_of
from optd_client.types import Checkpoint

T = TypeVar("T")


class Client:
    """A connection to an optd server.

    `url` defaults to `$OPTD_URL` (else http://127.0.0.1:8000) and `api_key` to
    `$OPTD_API_KEY`. Tensors travel as safetensors unless `wire="json"`. Failed
    requests are retried `retries` times with exponential backoff (`backoff` seconds
    base, full jitter); see `optd_client.errors` for what a final failure raises.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._core = Core(url, **options)
        self._http = httpx.Client(transport=transport, timeout=self._core.timeout)
        self._sleep = time.sleep
        self._pool: ThreadPoolExecutor | None = None  # a sharded step's parallel requests
        self._pool_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self._core.url

    def _run(self, flow: Flow[T]) -> T:
        result: Any = None
        while True:
            try:
                op = flow.send(result)
            except StopIteration as stop:
                value: T = stop.value
                return value
            if isinstance(op, Sleep):
                self._sleep(op.seconds)
                result = None
                continue
            if isinstance(op, Gather):
                result = self._gather(op.flows)
                continue
            try:
                result = self._http.send(op.request)
            except httpx.TransportError as exc:
                result = exc

    def _gather(self, flows: Sequence[Flow[Any]]) -> list[Any]:
        if len(flows) <= 1:
            return [self._run(flow) for flow in flows]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="optd")
            pool = self._pool
        futures = [pool.submit(self._run, flow) for flow in flows]
        return [future.result() for future in futures]

    def create_session(
        self,
        optimizer: str,
        params: Mapping[str, Any],
        *,
        shards: int | None = None,
        **options: Any,
    ) -> Session:
        """Create a session with initial `params` ({name: array}).

        Keyword arguments `dtype`, `schedule`, `max_grad_norm`, `check_finite`, `groups`,
        `mode`, `workers`, `max_staleness`, `staleness_lr`, `labels`, `ttl_s` configure
        the session; every other one is a hyperparameter in torch's naming (`lr=1e-3`,
        `betas=(0.9, 0.999)`, `weight_decay=...`), as is a `hyperparams={...}` mapping.

        `shards=K` (2-64, async mode) spreads the session over K shard sessions that API
        processes serve in parallel; `step()` then runs the two-phase sharded step
        (DESIGN §3 "Sharded sessions") and `params()` answers whole tensors.
        """
        if shards is not None:
            options = {**options, "shards": shards}
        info = self._run(self._core.create(optimizer, params, options))
        session = Session(self, str(info["id"]))
        session._s.version = int(info.get("version", 0))
        session._s.layout = layout_of(info)
        return session

    def session(self, session_id: str, *, worker: str | None = None) -> Session:
        """A handle on an existing session (no request is made)."""
        return Session(self, session_id, worker=worker)

    def list_sessions(
        self, labels: Mapping[str, str] | None = None, *, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every session (optionally only those with all of `labels`), page by page."""
        cursor: str | None = None
        while True:
            items, cursor = self._run(self._core.list_page(labels, cursor, page_size))
            yield from items
            if not cursor:
                return

    def optimizers(self) -> dict[str, Any]:
        """`GET /v1/optimizers`: every optimizer with its hyperparameter schema."""
        return self._run(self._core.optimizers())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session(SessionBase):
    """One optimizer session on the server."""

    def __init__(self, client: Client, session_id: str, *, worker: str | None = None) -> None:
        super().__init__(session_id, worker, client.url)
        self._client = client

    def step(
        self,
        grads: Mapping[str, Any],
        *,
        base_version: int | None = None,
        worker: str | None = None,
        loss: float | None = None,
        wait: float | None = None,
        grad_dtype: GradDtype = "float32",
        params_dtype: str = "float32",
        block: int = DEFAULT_BLOCK,
    ) -> dict[str, Array]:
        """Apply gradients (all parameters or a subset); returns every new parameter.
        `self.last` then holds the step's version, step, lr, grad_norm and staleness.

        In a sync-mode session `wait` bounds how long the server holds the request for
        the round (its default is 30 s); a round still open then is awaited with
        long-polls on `GET .../params`, up to the client's `barrier_timeout`.

        A sharded session (`create_session(shards=K)`) is stepped shard by shard in two
        phases (see the README, "Sharded sessions"); `base_version` and `wait` do not
        apply there.

        Fewer bytes (DESIGN §3): `grad_dtype="bfloat16"` sends the gradients rounded to
        bfloat16, `"int8"` quantized in blocks of `block` values with one scale each
        (safetensors wire only); `params_dtype="bfloat16"` asks for the parameters in
        bfloat16 (`Optd-Response-Dtype`)."""
        flow = self._client._core.step(
            self._s, grads, base_version, worker, loss, wait, grad_dtype, params_dtype, block
        )
        return self._client._run(flow)

    def params(
        self,
        names: Iterable[str] | None = None,
        min_version: int | None = None,
        wait: float | None = None,
        params_dtype: str = "float32",
    ) -> dict[str, Array]:
        """Current parameters; with `min_version` and `wait`, long-poll until the session
        reaches that version or `wait` seconds pass (then compare `self.version`).
        `params_dtype="bfloat16"` asks for them rounded to bfloat16 (half the bytes)."""
        flow = self._client._core.get_params(self._s, names, min_version, wait, params_dtype)
        return self._client._run(flow)

    def set_params(self, params: Mapping[str, Any], *, if_match: int | None = None) -> int:
        """Overwrite some or all parameter values, keeping the optimizer state."""
        return self._client._run(self._client._core.put_params(self._s, params, if_match))

    def update(self, *, if_match: int | None = None, **changes: Any) -> dict[str, Any]:
        """PATCH: hyperparameters by torch name (`lr=...`), or `schedule`,
        `max_grad_norm`, `check_finite`, `max_staleness`, `staleness_lr`, `labels`, `ttl_s`."""
        return self._client._run(self._client._core.patch(self._s, changes, if_match))

    def state(self) -> Checkpoint:
        """The full checkpoint: params, every optimizer slot, step counts and config."""
        return self._client._run(self._client._core.get_state(self._s))

    def load_state(self, checkpoint: Checkpoint, *, if_match: int | None = None) -> int:
        """Restore a checkpoint into this session (created under this id when absent)."""
        return self._client._run(self._client._core.put_state(self._s, checkpoint, if_match))

    def info(self) -> dict[str, Any]:
        """Config, version, step counts, parameter shapes, current lr, last loss."""
        return self._client._run(self._client._core.info(self._s))

    def join(self, worker: str | None = None) -> dict[str, Any]:
        """Join this sync session's workers, or renew the lease (a heartbeat); `worker`
        defaults to `self.worker`. Answers the version to compute on and the open round."""
        return self._client._run(self._client._core.join(self._s, worker))

    def leave(self, worker: str | None = None) -> None:
        """Leave the session's workers now: rounds stop waiting for this worker."""
        self._client._run(self._client._core.leave(self._s, worker))

    def workers(self) -> dict[str, Any]:
        """Members (live, last seen, rounds) and the open round's have/need/closes_in_s."""
        return self._client._run(self._client._core.workers(self._s))

    def delete(self) -> None:
        self._client._run(self._client._core.delete(self._s))
