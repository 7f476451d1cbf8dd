"""The flows of every API call (generators of `Send`/`Sleep`, see `_retry`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import numpy as np

from optd_client import _compress, _sharded, _wire
from optd_client._core import (
    CREATE_KEYS,
    PATCH_KEYS,
    Array,
    CoreBase,
    etag_version,
    float_or_none,
    int_or_none,
    split_options,
)
from optd_client._retry import Flow, Sleep, exchange
from optd_client._session import SessionState
from optd_client._shards import layout_of
from optd_client.errors import BarrierTimeoutError, ConflictError, OptdError
from optd_client.types import Checkpoint, StepInfo


def _names_shards(exc: ConflictError, sid: str) -> bool:
    """A 409 of a sharded session's own id, which names its shard sessions."""
    named = "shards" in exc.problem or "shard" in exc.detail.lower() or f"{sid}-s0" in exc.detail
    return exc.slug == "conflict" and named


class Core(CoreBase):
    # -- sessions --------------------------------------------------------------------

    def create(
        self,
        optimizer: str,
        params: Mapping[str, Any],
        options: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> Flow[dict[str, Any]]:
        config = {"optimizer": optimizer, **split_options(options, CREATE_KEYS)}
        arrays = _wire.as_arrays(params, "params")
        key = {"idempotency-key": idempotency_key or str(uuid.uuid4())}
        if self.wire == "safetensors":
            body = _wire.encode_safetensors(arrays, {"config": _wire.dumps(config).decode()})
        else:
            body = _wire.dumps({**config, "params": _wire.encode_json_tensors(arrays)})
        req = self.request(
            "POST", "/v1/sessions", content=body, content_type=self.tensor_type, headers=key
        )
        info: dict[str, Any] = yield from self._run_json(req)
        if (int_or_none(config.get("shards")) or 1) > 1 and not info.get("shards"):
            info = yield from self._run_json(self.request("GET", self._path(str(info["id"]))))
        return info

    def info(self, s: SessionState) -> Flow[dict[str, Any]]:
        info: dict[str, Any] = yield from self._run_json(self.request("GET", self._path(s.id)))
        s.version = int_or_none(info.get("version"))
        s.layout = layout_of(info)
        return info

    def list_page(
        self, labels: Mapping[str, str] | None, cursor: str | None, limit: int
    ) -> Flow[tuple[list[dict[str, Any]], str | None]]:
        query: list[tuple[str, str | int]] = [("limit", limit)]
        if cursor:
            query.append(("cursor", cursor))
        query += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
        doc = yield from self._run_json(self.request("GET", "/v1/sessions", params=query))
        return list(doc.get("sessions") or []), doc.get("next_cursor")

    def patch(
        self, s: SessionState, changes: Mapping[str, Any], if_match: int | None
    ) -> Flow[dict[str, Any]]:
        headers = {"if-match": f'"{if_match}"'} if if_match is not None else None
        body = _wire.dumps(split_options(changes, PATCH_KEYS))
        req = self.request(
            "PATCH", self._path(s.id), content=body, content_type=_wire.JSON, headers=headers
        )
        info: dict[str, Any] = yield from self._run_json(req)
        s.version = int_or_none(info.get("version"))
        return info

    def delete(self, s: SessionState) -> Flow[None]:
        yield from exchange(self.policy, self.request("DELETE", self._path(s.id)), self.owners)

    # -- the workers of a sync session (elastic rounds) ---------------------------------

    def _worker_path(self, s: SessionState, worker: str | None) -> str:
        w = worker if worker is not None else s.worker
        if not w:
            raise ValueError("no worker id: pass worker= or set session.worker")
        return self._path(s.id, f"/workers/{quote(w, safe='')}")

    def join(self, s: SessionState, worker: str | None) -> Flow[dict[str, Any]]:
        req = self.request("PUT", self._worker_path(s, worker))
        doc: dict[str, Any] = yield from self._run_json(req)
        s.version = int_or_none(doc.get("version"))
        return doc

    def leave(self, s: SessionState, worker: str | None) -> Flow[None]:
        yield from exchange(
            self.policy, self.request("DELETE", self._worker_path(s, worker)), self.owners
        )

    def workers(self, s: SessionState) -> Flow[dict[str, Any]]:
        doc: dict[str, Any] = yield from self._run_json(
            self.request("GET", self._path(s.id, "/workers"))
        )
        return doc

    def optimizers(self) -> Flow[dict[str, Any]]:
        doc: dict[str, Any] = yield from self._run_json(self.request("GET", "/v1/optimizers"))
        return doc

    # -- step and params ---------------------------------------------------------------

    def step(
        self,
        s: SessionState,
        grads: Mapping[str, Any],
        base_version: int | None,
        worker: str | None,
        loss: float | None,
        wait: float | None = None,
        grad_dtype: _compress.GradDtype = "float32",
        params_dtype: str = "float32",
        block: int = _compress.DEFAULT_BLOCK,
    ) -> Flow[dict[str, Array]]:
        arrays = _wire.as_arrays(grads, "grads")
        worker = worker if worker is not None else s.worker
        sharded = (s, arrays, worker, loss, grad_dtype, params_dtype, block)
        if s.layout is not None:  # DESIGN §3 "Sharded sessions"
            return (yield from _sharded.step(self, *sharded))
        headers = {"idempotency-key": str(uuid.uuid4())}
        if params_dtype != "float32":
            headers["optd-response-dtype"] = params_dtype
        fields: dict[str, Any] = {}
        if self.wire == "safetensors":
            if base_version is not None:
                headers["optd-base-version"] = str(int(base_version))
            if loss is not None:
                headers["optd-loss"] = repr(float(loss))
            if worker is not None:
                if worker.isascii() and worker.isprintable():
                    headers["optd-worker"] = worker
                else:  # header values are latin-1; metadata carries any string
                    fields["worker"] = worker
        else:
            opts = {"base_version": base_version, "worker": worker, "loss": loss}
            fields = {k: v for k, v in opts.items() if v is not None}
        body = self.grads_body(arrays, fields, grad_dtype, block)
        s.sent += len(body)
        query = {"wait": float(wait)} if wait is not None else None
        req = self.request(
            "POST", self._path(s.id, "/step"), content=body, params=query,
            content_type=self.tensor_type, accept=self.tensor_type, headers=headers,
            wait=wait or 0.0,
        )  # fmt: skip
        try:
            response = yield from exchange(self.policy, req, self.owners)
        except ConflictError as exc:  # a sharded session's own id refuses steps
            if not _names_shards(exc, s.id) or not (yield from self._learn_layout(s)):
                raise
            return (yield from _sharded.step(self, *sharded))
        s.received += len(response.content)
        if response.status_code == 202:
            barrier = response.json().get("barrier") or {}
            return (yield from self._await_barrier(s, barrier, params_dtype))
        doc, params = self._tensors(response, "params")
        version = int_or_none(doc.get("version"))
        if version is None:
            version = etag_version(response)
        s.version = version
        s.last = StepInfo(
            version=version if version is not None else -1,
            step=int_or_none(doc.get("step")),
            lr=float_or_none(doc.get("lr")),
            grad_norm=float_or_none(doc.get("grad_norm")),
            staleness=int_or_none(doc.get("staleness")),
            replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
        )
        return params

    def _learn_layout(self, s: SessionState) -> Flow[bool]:
        """Whether the session turns out to be sharded (a handle made without its info)."""
        try:
            yield from self.info(s)
        except OptdError:
            return False
        return s.layout is not None

    def _await_barrier(
        self, s: SessionState, barrier: dict[str, Any], params_dtype: str = "float32"
    ) -> Flow[dict[str, Array]]:
        """A sync-mode step waited in vain (202): long-poll for the barrier's version + 1."""
        base = int_or_none(barrier.get("version"))
        target = (base if base is not None else (s.version or 0)) + 1
        deadline = time.monotonic() + self.barrier_timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            params = yield from self.get_params(
                s, None, target, min(self.poll_wait, left), params_dtype
            )
            if s.version is not None and s.version >= target:
                s.last = StepInfo(s.version, None, None, None, None, barrier=dict(barrier))
                return params
            if time.monotonic() >= deadline:
                raise BarrierTimeoutError(
                    f"the sync barrier for version {target - 1} did not complete within "
                    f"{self.barrier_timeout:g} s (last status: {barrier})",
                    problem={"barrier": barrier, "current_version": s.version},
                )
            yield Sleep(self.policy.backoff)

    def get_params(
        self,
        s: SessionState,
        names: Iterable[str] | None,
        min_version: int | None,
        wait: float | None,
        params_dtype: str = "float32",
    ) -> Flow[dict[str, Array]]:
        query: dict[str, str | int | float] = {}
        if names is not None:
            query["names"] = ",".join(names)
        if min_version is not None:
            query["min_version"] = int(min_version)
        if wait is not None:
            query["wait"] = float(wait)
        req = self.request(
            "GET",
            self._path(s.id, "/params"),
            params=query,
            accept=self.tensor_type,
            wait=wait or 0.0,
            headers={"optd-response-dtype": params_dtype} if params_dtype != "float32" else None,
        )
        response = yield from exchange(self.policy, req, self.owners)
        s.received += len(response.content)
        doc, params = self._tensors(response, "params")
        version = int_or_none(doc.get("version"))
        s.version = version if version is not None else etag_version(response)
        return params

    def put_params(
        self, s: SessionState, params: Mapping[str, Any], if_match: int | None
    ) -> Flow[int]:
        headers = {"if-match": f'"{if_match}"'} if if_match is not None else None
        body = self._tensor_body(_wire.as_arrays(params, "params"), "params")
        req = self.request(
            "PUT",
            self._path(s.id, "/params"),
            content=body,
            content_type=self.tensor_type,
            headers=headers,
        )
        doc = yield from self._run_json(req)
        s.version = int(doc["version"])
        return s.version

    # -- checkpoints ---------------------------------------------------------------------

    def get_state(self, s: SessionState) -> Flow[Checkpoint]:
        req = self.request("GET", self._path(s.id, "/state"), accept=self.tensor_type)
        response = yield from exchange(self.policy, req, self.owners)
        doc, tensors = self._tensors(response, "tensors")
        meta = doc.get("meta") if "meta" in doc else doc.get("optd")
        if isinstance(meta, str):
            meta = json.loads(meta)
        if not isinstance(meta, dict):
            raise ValueError("malformed checkpoint response: no meta document")
        version = int_or_none(doc.get("version"))
        s.version = version
        return Checkpoint(tensors=tensors, meta=meta, version=version)

    def put_state(self, s: SessionState, ckpt: Checkpoint, if_match: int | None) -> Flow[int]:
        headers = {"if-match": f'"{if_match}"'} if if_match is not None else None
        tensors = {k: np.asarray(v) for k, v in ckpt.tensors.items()}
        if self.wire == "safetensors":
            body = _wire.encode_safetensors(tensors, {"optd": _wire.dumps(ckpt.meta).decode()})
        else:
            enc = _wire.encode_json_tensors(tensors)
            body = _wire.dumps({"version": ckpt.version, "meta": ckpt.meta, "tensors": enc})
        req = self.request(
            "PUT",
            self._path(s.id, "/state"),
            content=body,
            content_type=self.tensor_type,
            headers=headers,
        )
        doc = yield from self._run_json(req)
        s.version = int(doc["version"])
        return s.version
