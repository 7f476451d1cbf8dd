"""What `Client` and `AsyncClient` share besides the flows: configuration, request
building and response parsing. No I/O happens here (see `_retry`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from optd_client import _compress, _wire
from optd_client._owners import Owners
from optd_client._retry import Flow, RetryPolicy, exchange
from optd_client._session import Wire
from optd_client._version import __version__

Array = _wire.Array
DEFAULT_URL = "http://127.0.0.1:8000"

ELASTIC_KEYS = frozenset({"workers", "min_workers", "round_timeout_s", "worker_lease_s"})
CREATE_KEYS = frozenset(
    {"dtype", "schedule", "max_grad_norm", "check_finite", "groups", "mode"}
    | {"max_staleness", "staleness_lr", "labels", "ttl_s", "shards"}
    | ELASTIC_KEYS
)
PATCH_KEYS = frozenset(
    {"schedule", "max_grad_norm", "check_finite", "max_staleness", "staleness_lr"}
    | {"labels", "ttl_s"}
    | ELASTIC_KEYS
)


def split_options(options: Mapping[str, Any], top: frozenset[str]) -> dict[str, Any]:
    """Route keyword arguments: session-level keys stay top-level, the rest (torch
    hyperparameter names: lr, betas, ...) go under `hyperparams`."""
    body: dict[str, Any] = {k: v for k, v in options.items() if k in top}
    hyper = dict(options.get("hyperparams") or {})
    hyper.update({k: v for k, v in options.items() if k not in top and k != "hyperparams"})
    if hyper:
        body["hyperparams"] = hyper
    return body


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def etag_version(response: httpx.Response) -> int | None:
    tag = response.headers.get("etag", "").removeprefix("W/").strip('"')
    return int(tag) if tag.isdigit() else None


class CoreBase:
    """Configuration, request building and response parsing; the flows are in `_flows`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        wire: Wire = "safetensors",
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        barrier_timeout: float = 600.0,
        poll_wait: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if wire not in ("safetensors", "json"):
            raise ValueError(f"wire must be 'safetensors' or 'json', got {wire!r}")
        self.url = (url or os.environ.get("OPTD_URL") or DEFAULT_URL).rstrip("/")
        self.owners = Owners(self.url)  # sessions' owner processes, learnt from 307s
        self.wire: Wire = wire
        self.timeout = timeout
        self.policy = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self.barrier_timeout = barrier_timeout
        self.poll_wait = poll_wait
        self.headers = {"user-agent": f"optd-client/{__version__}", **(headers or {})}
        key = api_key if api_key is not None else os.environ.get("OPTD_API_KEY")
        if key:
            self.headers["authorization"] = f"Bearer {key}"

    # -- requests ------------------------------------------------------------------

    @property
    def tensor_type(self) -> str:
        return _wire.SAFETENSORS if self.wire == "safetensors" else _wire.JSON

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        accept: str = _wire.JSON,
        headers: Mapping[str, str] | None = None,
        wait: float = 0.0,
    ) -> httpx.Request:
        h = {**self.headers, "accept": accept, **(headers or {})}
        if content_type is not None:
            h["content-type"] = content_type
        timeout = httpx.Timeout(self.timeout + wait, connect=min(self.timeout, 10.0))
        return httpx.Request(
            method,
            self.owners.url_for(path),
            params=params,
            content=content,
            headers=h,
            extensions={"timeout": timeout.as_dict()},
        )

    def _tensor_body(self, tensors: Mapping[str, Array], key: str, **fields: Any) -> bytes:
        if self.wire == "safetensors":
            meta = {
                k: v if isinstance(v, str) else _wire.dumps(v).decode() for k, v in fields.items()
            }
            return _wire.encode_safetensors(tensors, meta)
        return _wire.dumps({**fields, key: _wire.encode_json_tensors(tensors)})

    def grads_body(
        self,
        arrays: Mapping[str, Array],
        fields: Mapping[str, Any],
        grad_dtype: _compress.GradDtype,
        block: int,
    ) -> bytes:
        """A step (or prepare) body of gradients sent as `grad_dtype` (DESIGN §3)."""
        if grad_dtype == "float32" or (self.wire == "json" and grad_dtype == "bfloat16"):
            if grad_dtype == "bfloat16":  # JSON: the values rounded, named bfloat16
                arrays = {k: _compress.bfloat16_round(v) for k, v in arrays.items()}
            body = self._tensor_body(arrays, "grads", **fields)
            if grad_dtype == "bfloat16":
                body = body.replace(b'"dtype":"float32"', b'"dtype":"bfloat16"')
            return body
        if self.wire == "json":
            raise ValueError("int8 gradients travel as safetensors only (wire='safetensors')")
        return _compress.encode(arrays, grad_dtype, fields, block)

    def _tensors(
        self, response: httpx.Response, key: str
    ) -> tuple[dict[str, Any], dict[str, Array]]:
        """Scalar fields and tensors of a tensor response, whatever its format."""
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in (_wire.SAFETENSORS, "application/octet-stream"):
            tensors, meta = _wire.decode_safetensors(response.content)
            return {k: _wire.metadata_value(meta, k) for k in meta}, tensors
        doc = response.json()
        return {k: v for k, v in doc.items() if k != key}, _wire.decode_json_tensors(doc.get(key))

    def _run_json(self, request: httpx.Request) -> Flow[Any]:
        response = yield from exchange(self.policy, request, self.owners)
        return response.json() if response.content else None

    @staticmethod
    def _path(sid: str, tail: str = "") -> str:
        return f"/v1/sessions/{quote(sid, safe='')}{tail}"
