"""What bench/peers/run.py times: a problem (a parameter count split into tensors) and, for
each system, a session on it whose `step()` returns the client-side seconds of one step.

Every system starts from the same parameters and gets the same gradient every step, and the
first step's answer of each is checked against one Adam step computed here (bench/common/np_adam.py,
float32): all of them do the same work, and only what is around the arithmetic differs.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import time
from functools import cached_property
from typing import Any

import numpy as np
import orjson
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bench.common import harness as h
from bench.common.np_adam import adam_step
from bench.common.slots import BIN_HEADERS, CONFIG, JSON_HEADERS

_ids = itertools.count(1)


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class Problem:
    """n float32 parameters as `parts` tensors (one tensor is `w`; 200 are `layers.NNN.weight`),
    the initial values, the gradient sent every step and its encodings, built once."""

    def __init__(self, n: int, parts: int, seed: int = 0) -> None:
        self.n, self.parts = n, parts
        sizes = split(n, parts)
        self.names = ["w"] if parts == 1 else [f"layers.{i:03d}.weight" for i in range(parts)]
        rng = np.random.default_rng(seed)
        p0 = np.random.default_rng(seed + 1).standard_normal(n, dtype=np.float32)
        g0 = (rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)).astype(np.float32)
        bounds = np.cumsum([0, *sizes])
        cut = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.init = {k: p0[a:b] for k, (a, b) in zip(self.names, cut, strict=True)}
        self.grads = {k: g0[a:b] for k, (a, b) in zip(self.names, cut, strict=True)}
        self.binary = st_save(self.grads)

    @property
    def state_bytes(self) -> int:
        return 12 * self.n  # params, exp_avg, exp_avg_sq as float32

    @cached_property
    def optd_json(self) -> bytes:
        tensors = {
            k: {"shape": [g.size], "dtype": "float32", "data": g} for k, g in self.grads.items()
        }
        return orjson.dumps({"grads": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)

    @cached_property
    def naive_json(self) -> bytes:
        """What a tutorial's client sends: `tolist()` floats (float64 text of float32 values)."""
        return orjson.dumps({"grads": {k: g.tolist() for k, g in self.grads.items()}})

    @cached_property
    def expected(self) -> np.ndarray:
        """The parameters after one Adam step, flat in name order."""
        out = []
        for k in self.names:
            p, g = self.init[k].copy(), self.grads[k]
            adam_step(p, g, np.zeros_like(p), np.zeros_like(p), 1)
            out.append(p)
        return np.concatenate(out)

    def check(self, key: str, params: dict[str, Any]) -> None:
        got = np.concatenate([np.asarray(params[k], dtype=np.float32).ravel() for k in self.names])
        # an Adam step moves every parameter by ~lr = 1e-3: 1e-6 tells a step from none
        if got.shape != self.expected.shape or not np.allclose(got, self.expected, 0, 1e-6):
            err = (
                float(np.max(np.abs(got - self.expected)))
                if got.shape == self.expected.shape
                else -1
            )
            raise RuntimeError(f"{key}: the first step's parameters are wrong (max error {err})")


class Session:
    """One system's session on one problem."""

    key = ""

    def step(self) -> float:
        raise NotImplementedError

    def first(self, problem: Problem) -> None:
        """One step whose answer is checked (warm-up, not timed)."""
        self.step()

    def close(self) -> None:
        pass


def _request(conn: h.Http, key: str, method: str, path: str, body: bytes, headers: Any) -> bytes:
    status, _, data = conn.request(method, path, body, headers)
    if status not in (200, 201, 204):
        raise RuntimeError(f"{key}: {method} {path} answered {status}: {data[:300]!r}")
    return data


class HttpSession(Session):
    """A step is one POST of a body built once on a keep-alive connection; with several
    ports the steps go round-robin over them (a per-request load balancer)."""

    def __init__(self, key: str, ports: list[int], path: str, body: bytes, headers: Any) -> None:
        self.key, self.path, self.body, self.headers = key, path, body, headers
        self.conns = [h.Http(p) for p in ports]
        self.i = 0
        self.last = b""

    def step(self) -> float:
        conn = self.conns[self.i % len(self.conns)]
        self.i += 1
        conn.fresh()
        t0 = time.perf_counter()
        status, _, data = conn.request("POST", self.path, self.body, self.headers)
        dt = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"{self.key}: step answered {status}: {data[:300]!r}")
        self.last = data
        return dt

    def cleanup(self, method: str, path: str) -> None:
        """Best effort (it runs in finally blocks): free the server's memory."""
        try:
            conn = self.conns[0]
            conn.fresh()
            conn.request(method, path)
        except (OSError, http.client.HTTPException) as exc:
            print(f"warning: cleanup of {self.key} failed: {exc!r}")
        finally:
            for c in self.conns:
                c.close()


class OptdSession(HttpSession):
    def __init__(self, key: str, ports: list[int], fmt: str, problem: Problem) -> None:
        self.fmt = fmt
        body, headers = (
            (problem.binary, BIN_HEADERS) if fmt == "binary" else (problem.optd_json, JSON_HEADERS)
        )
        super().__init__(key, ports, "", body, headers)
        create = st_save(problem.init, metadata={"config": orjson.dumps(CONFIG).decode()})
        data = _request(
            self.conns[0],
            key,
            "POST",
            "/v1/sessions",
            create,
            {"content-type": "application/x-safetensors"},
        )
        self.sid = orjson.loads(data)["id"]
        self.path = f"/v1/sessions/{self.sid}/step"

    def first(self, problem: Problem) -> None:
        self.step()
        if self.fmt == "binary":
            problem.check(self.key, st_load(self.last))
        else:
            params = orjson.loads(self.last)["params"]
            problem.check(self.key, {k: v["data"] for k, v in params.items()})

    def close(self) -> None:
        self.cleanup("DELETE", f"/v1/sessions/{self.sid}")


class EchoSession(HttpSession):
    def __init__(self, key: str, port: int, fmt: str, problem: Problem) -> None:
        body = problem.binary if fmt == "binary" else problem.optd_json
        super().__init__(
            key, [port], "/echo", body, BIN_HEADERS if fmt == "binary" else JSON_HEADERS
        )

    def first(self, problem: Problem) -> None:
        self.step()
        if self.last != self.body:
            raise RuntimeError(f"{self.key}: the echo is not the body")

    def close(self) -> None:
        for c in self.conns:
            c.close()


class EchoRedisSession(EchoSession):
    def __init__(self, key: str, port: int, fmt: str, problem: Problem) -> None:
        super().__init__(key, port, fmt, problem)
        self.sid = f"peers{next(_ids)}"
        _request(self.conns[0], key, "PUT", f"/state/{self.sid}?n={problem.n}", b"", {})
        self.path = f"/echo_redis/{self.sid}"

    def close(self) -> None:
        self.cleanup("DELETE", f"/state/{self.sid}")


class NaiveSession(HttpSession):
    def __init__(self, key: str, port: int, problem: Problem) -> None:
        super().__init__(key, [port], "", problem.naive_json, JSON_HEADERS)
        create = orjson.dumps({"params": {k: p.tolist() for k, p in problem.init.items()}})
        data = _request(self.conns[0], key, "POST", "/sessions", create, JSON_HEADERS)
        self.sid = orjson.loads(data)["id"]
        self.path = f"/sessions/{self.sid}/step"

    def first(self, problem: Problem) -> None:
        self.step()
        problem.check(self.key, orjson.loads(self.last)["params"])

    def close(self) -> None:
        self.cleanup("DELETE", f"/sessions/{self.sid}")


class RaySession(Session):
    """`ray.get(ps.step.remote(grads))` on an actor of its own (the classic example)."""

    def __init__(self, key: str, actor_cls: Any, problem: Problem) -> None:
        import ray

        self.key, self.ray, self.grads = key, ray, problem.grads
        self.actor = actor_cls.remote(problem.init)
        self.pid = int(ray.get(self.actor.pid.remote()))
        self.last: dict[str, np.ndarray] = {}

    def step(self) -> float:
        t0 = time.perf_counter()
        self.last = self.ray.get(self.actor.step.remote(self.grads))
        return time.perf_counter() - t0

    def first(self, problem: Problem) -> None:
        self.step()
        problem.check(self.key, self.last)

    def close(self) -> None:
        self.last = {}
        with contextlib.suppress(Exception):
            self.ray.kill(self.actor)


class NumpySession(Session):
    """The arithmetic alone, in this process: bench/common/np_adam.py per tensor."""

    def __init__(self, key: str, problem: Problem) -> None:
        self.key, self.grads = key, problem.grads
        self.p = {k: v.copy() for k, v in problem.init.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0

    def step(self) -> float:
        t0 = time.perf_counter()
        self.t += 1
        for k, g in self.grads.items():
            adam_step(self.p[k], g, self.m[k], self.v[k], self.t)
        return time.perf_counter() - t0

    def first(self, problem: Problem) -> None:
        self.step()
        problem.check(self.key, self.p)


class TorchSession(Session):
    """torch.optim.Adam(fused=True) on the same tensors, gradients already in `.grad`."""

    def __init__(self, key: str, problem: Problem) -> None:
        import torch

        self.key = key
        self.params = [
            torch.nn.Parameter(torch.from_numpy(p.copy())) for p in problem.init.values()
        ]
        for p, g in zip(self.params, problem.grads.values(), strict=True):
            p.grad = torch.from_numpy(g.copy())
        self.opt = torch.optim.Adam(self.params, lr=1e-3, fused=True)

    def step(self) -> float:
        t0 = time.perf_counter()
        self.opt.step()
        return time.perf_counter() - t0

    def first(self, problem: Problem) -> None:
        self.step()
        problem.check(
            self.key,
            {k: p.detach().numpy() for k, p in zip(problem.names, self.params, strict=True)},
        )
