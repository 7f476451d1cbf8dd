"""An in-process fake of a sharded optd session (plain SGD, optional clipping) for
`httpx.MockTransport`: just enough of DESIGN §3 "Sharded sessions" (prepare, commit with
If-Match and idempotency records, prepare-expired, 307 to an owner) to drive the SDK's
sharded step through its failure paths. `faults` run before the fake answers: one may
answer instead (a response), raise (a cut connection), or return None to pass."""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from mock_optd import URL, problem, tensors

from optd_client import AsyncClient, Client, _wire

OWNER = "http://owner.test"
Fault = Callable[[httpx.Request], httpx.Response | None]
_PATH = re.compile(r"^/v1/sessions/([^/]+?)(?:-s(\d+))?(/prepare|/step|/params)?$")


@dataclass
class FakeShard:
    pieces: list[tuple[str, int, int]]
    params: dict[str, np.ndarray[Any, Any]]
    version: int = 0
    step: int = 0
    tokens: dict[str, dict[str, np.ndarray[Any, Any]]] = field(default_factory=dict)
    records: dict[str, tuple[bytes, httpx.Response]] = field(default_factory=dict)
    applied: int = 0


class FakeSharded:
    def __init__(
        self,
        params: dict[str, np.ndarray[Any, Any]],
        cuts: list[list[tuple[str, int, int]]],
        lr: float = 0.1,
        max_grad_norm: float | None = None,
        sid: str = "p",
    ) -> None:
        self.sid, self.lr, self.max_grad_norm = sid, lr, max_grad_norm
        self.shapes = {n: a.shape for n, a in params.items()}
        flat = {n: np.asarray(a, np.float32).reshape(-1) for n, a in params.items()}
        self.shards = [
            FakeShard(pieces, {n: flat[n][a:b].copy() for n, a, b in pieces}) for pieces in cuts
        ]
        self.faults: list[Fault] = []
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.commit_bodies: list[tuple[int, dict[str, Any]]] = []
        self.owned: dict[int, str] = {}  # shard index -> owner URL that must serve it
        self.lock = threading.RLock()

    # -- what the tests look at ------------------------------------------------------

    def full(self) -> dict[str, np.ndarray[Any, Any]]:
        out = {n: np.empty(math.prod(s), np.float32) for n, s in self.shapes.items()}
        for sh in self.shards:
            for n, a, b in sh.pieces:
                out[n][a:b] = sh.params[n]
        return {n: out[n].reshape(s) for n, s in self.shapes.items()}

    def versions(self) -> list[int]:
        return [sh.version for sh in self.shards]

    def info(self) -> dict[str, Any]:
        shards = [
            {
                "id": f"{self.sid}-s{k}", "index": k, "version": sh.version,
                "tensors": [{"name": n, "start": a, "stop": b} for n, a, b in sh.pieces],
            }
            for k, sh in enumerate(self.shards)
        ]  # fmt: skip
        params = {n: {"shape": list(s), "step": 0} for n, s in self.shapes.items()}
        return {"id": self.sid, "version": min(self.versions()), "params": params, "shards": shards}

    # -- transport -------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self.lock:
            self.requests.append(request)
            for fault in list(self.faults):
                reply = fault(request)
                if reply is not None:
                    return reply
            return self._answer(request)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        m = _PATH.match(request.url.path)
        assert m is not None and m.group(1) == self.sid, request.url
        if m.group(2) is None:
            if request.method == "GET" and m.group(3) is None:
                return httpx.Response(200, json=self.info())
            return problem("conflict", 409, f"sharded: use the shards {self.sid}-s0...")
        k = int(m.group(2))
        owner = self.owned.get(k)
        if owner is not None and not str(request.url).startswith(owner):
            loc = owner + request.url.path
            return httpx.Response(307, headers={"location": loc, "optd-owner": owner})
        if m.group(3) == "/prepare":
            return self._prepare(self.shards[k], request)
        assert m.group(3) == "/step"
        return self._commit(k, request)

    def _prepare(self, sh: FakeShard, request: httpx.Request) -> httpx.Response:
        if request.headers["content-type"] == _wire.SAFETENSORS:
            grads = _wire.decode_safetensors(request.content)[0]
        else:
            grads = _wire.decode_json_tensors(json.loads(request.content)["grads"])
        for n, g in grads.items():
            a, b = next((a, b) for m, a, b in sh.pieces if m == n)
            assert g.shape == (b - a,), (n, g.shape)
            if not np.isfinite(g).all():
                return problem("invalid-tensor", 422, f"{n}: not finite")
        token = uuid.uuid4().hex
        sh.tokens[token] = grads
        sumsq = [float(np.dot(g.astype(np.float64), g.astype(np.float64))) for g in grads.values()]
        return httpx.Response(200, json={"prepared": token, "version": sh.version, "sumsq": sumsq})

    def _commit(self, k: int, request: httpx.Request) -> httpx.Response:
        sh = self.shards[k]
        key = request.headers["idempotency-key"]
        if key in sh.records:
            body, answer = sh.records[key]
            assert body == request.content, "same key, other body"
            return httpx.Response(
                answer.status_code, content=answer.content,
                headers={**answer.headers, "idempotent-replayed": "true"},
            )  # fmt: skip
        doc = json.loads(request.content)
        self.commit_bodies.append((k, doc))
        if request.headers["if-match"] != f'"{sh.version}"':
            return problem("precondition-failed", 412, "version", current_version=sh.version)
        grads = sh.tokens.pop(doc["prepared"], None)
        if grads is None:
            return problem("prepare-expired", 409, "unknown token")
        norm = math.sqrt(sum(float(x) for x in doc["sumsq"]))
        scale = 1.0
        if self.max_grad_norm is not None and norm > self.max_grad_norm:
            scale = self.max_grad_norm / (norm + 1e-6)
        for n, g in grads.items():
            sh.params[n] = (sh.params[n] - np.float32(self.lr * scale) * g).astype(np.float32)
        sh.version += 1
        sh.step += 1
        sh.applied += 1
        fields = {"version": sh.version, "step": sh.step, "lr": self.lr, "grad_norm": norm}
        if request.headers["accept"] == _wire.JSON:
            out = {**fields, "params": _wire.encode_json_tensors(sh.params)}
            answer = httpx.Response(200, json=out)
        else:
            answer = tensors(dict(sh.params), **fields)
        sh.records[key] = (request.content, answer)
        return answer

    # -- clients ---------------------------------------------------------------------

    def client(self, **options: Any) -> Client:
        options.setdefault("backoff", 0.0)
        client = Client(URL, transport=httpx.MockTransport(self), **options)
        client._sleep = self.sleeps.append  # type: ignore[assignment]
        return client

    def async_client(self, **options: Any) -> AsyncClient:
        options.setdefault("backoff", 0.0)
        client = AsyncClient(URL, transport=httpx.MockTransport(self), **options)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        client._sleep = sleep  # type: ignore[assignment]
        return client
