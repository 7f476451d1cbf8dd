"""What each benchmarked system is sent: the session, the request body, the headers.

A Slot is one system's session at one size, created through the public API (optd) or
seeded in the floor server, with the request built once so a timed step only moves bytes.
"""

from __future__ import annotations

import http.client
import sys
import time
from dataclasses import dataclass

import numpy as np
import orjson
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bench.common import harness as h

CONFIG = {"optimizer": "adam", "hyperparams": {"lr": 1e-3}}
BIN_HEADERS = {"content-type": "application/x-safetensors", "accept": "application/x-safetensors"}
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


@dataclass
class Target:
    key: str  # e.g. "optd/redis/binary"
    kind: str  # "optd" | "echo" | "echo_redis"
    store: str  # "redis" | "memory" | "" (floors)
    fmt: str  # "binary" | "json"
    proc: h.Proc

    @property
    def label(self) -> str:
        if self.kind == "optd":
            return f"{self.store} {self.fmt}"
        return f"{'echo' if self.kind == 'echo' else 'echo+redis'} {self.fmt}"


def make_bodies(n: int, seed: int = 0) -> tuple[np.ndarray, bytes, bytes]:
    rng = np.random.default_rng(seed)
    grad = (rng.standard_normal(n, dtype=np.float32) * np.float32(0.01)).astype(np.float32)
    binary = st_save({"w": grad})
    tensor = {"shape": [n], "dtype": "float32", "data": grad}
    js = orjson.dumps({"grads": {"w": tensor}}, option=orjson.OPT_SERIALIZE_NUMPY)
    return grad, binary, js


class Slot:
    """One target's session at one size: where to POST a step and what to send."""

    def __init__(self, target: Target, n: int, binary: bytes, js: bytes, tag: str) -> None:
        self.target, self.n = target, n
        self.conn = h.Http(target.proc.port)
        self.body = binary if target.fmt == "binary" else js
        self.headers = BIN_HEADERS if target.fmt == "binary" else JSON_HEADERS
        if target.kind == "optd":
            init = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
            create = st_save({"w": init}, metadata={"config": orjson.dumps(CONFIG).decode()})
            status, _, data = self.conn.request(
                "POST", "/v1/sessions", create, {"content-type": "application/x-safetensors"}
            )
            if status != 201:
                raise RuntimeError(f"{target.key}: create answered {status}: {data[:300]!r}")
            self.sid = orjson.loads(data)["id"]
            self.path = f"/v1/sessions/{self.sid}/step"
        elif target.kind == "echo":
            self.sid, self.path = "", "/echo"
        else:
            self.sid = f"{tag}-{target.fmt}"
            status, _, data = self.conn.request("PUT", f"/state/{self.sid}?n={n}")
            if status != 204:
                raise RuntimeError(f"{target.key}: seeding answered {status}: {data[:300]!r}")
            self.path = f"/echo_redis/{self.sid}"

    def step(self) -> tuple[float, bytes]:
        self.conn.fresh()
        t0 = time.perf_counter()
        status, _, data = self.conn.request("POST", self.path, self.body, self.headers)
        dt = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"{self.target.key} step answered {status}: {data[:300]!r}")
        return dt, data

    def check(self, data: bytes) -> None:
        """The first warm-up response is what the cell claims to measure."""
        t = self.target
        if t.kind != "optd":
            ok = data == self.body
        elif t.fmt == "binary":
            ok = st_load(data)["w"].shape == (self.n,)
        else:
            ok = orjson.loads(data)["params"]["w"]["shape"] == [self.n]
        if not ok:
            raise RuntimeError(f"{t.key}: unexpected response ({len(data)} bytes)")

    def close(self) -> None:
        """Best effort (it runs in finally blocks): free the server's memory for the next size."""
        try:
            self.conn.fresh()
            if self.target.kind == "optd":
                self.conn.request("DELETE", f"/v1/sessions/{self.sid}")
            elif self.target.kind == "echo_redis":
                self.conn.request("DELETE", f"/state/{self.sid}")
        except (OSError, http.client.HTTPException) as exc:
            print(f"warning: cleanup of {self.target.key} failed: {exc!r}", file=sys.stderr)
        finally:
            self.conn.close()
