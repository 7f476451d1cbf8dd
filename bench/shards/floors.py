"""The floors bench/shards/run.py sets beside its steps, measured in the same run: what
the client, Redis and the bytes themselves cost, apart from optd's server."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import redis as redis_lib

from bench.common import harness as h


def problem(n: int, tensors: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    sizes = [n // tensors + (1 if i < n % tensors else 0) for i in range(tensors)]
    p0 = {f"t{i:03d}": rng.standard_normal(s, dtype=np.float32) for i, s in enumerate(sizes)}
    g = {k: rng.standard_normal(v.size, dtype=np.float32) * np.float32(0.01) for k, v in p0.items()}
    return p0, g


def floors(n: int, tensors: int, redis_url: str, echo_port: int, repeats: int) -> dict[str, float]:
    """p50 of: the client's own split + assemble for 2 shards; one redis-server absorbing a
    step's gradient (the log's write, 4 bytes a parameter); the step's bytes through the
    SDK's HTTP client (httpx) and a bare echo server, encoded and decoded as the SDK does,
    as one body and as two halves in parallel (what a 2-shard step moves)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from optd_client import _shards
    from safetensors.numpy import load, save

    p0, g = problem(n, tensors)
    shapes = {k: list(v.shape) for k, v in p0.items()}
    total = sum(v.size for v in p0.values())
    cut = (total // 2) // 32768 * 32768 or total // 2
    layout = _shards.layout_of(_info(shapes, total, cut))
    assert layout is not None
    halves = _shards.split(layout, g)
    blob = np.ones(total, np.float32).tobytes()
    r = redis_lib.Redis.from_url(redis_url)
    http = httpx.Client(base_url=f"http://{h.HOST}:{echo_port}", timeout=120)
    pool = ThreadPoolExecutor(2)

    def echo(tensors: dict[str, np.ndarray]) -> None:
        body = save(tensors)
        load(http.post("/echo", content=body, headers={"content-type": ST}).content)

    out: dict[str, list[float]] = {k: [] for k in FLOORS}
    for _ in range(repeats):
        for name, work in (
            (FLOORS[0], lambda: _shards.assemble(layout, _shards.split(layout, g))),
            (FLOORS[1], lambda: r.set("bench:shards:floor", blob)),
            (FLOORS[2], lambda: echo(g)),
            (FLOORS[3], lambda: list(pool.map(echo, halves))),
        ):
            t0 = time.perf_counter()
            work()
            out[name].append(time.perf_counter() - t0)
    r.delete("bench:shards:floor")
    r.close()
    http.close()
    pool.shutdown()
    return {k: statistics.median(v) for k, v in out.items()}


ST = "application/x-safetensors"
FLOORS = (
    "SDK split + assemble (2 shards)",
    "Redis absorbs a step (SET of the gradient)",
    "the step's bytes through httpx: encode, echo, decode",
    "the same as two halves in parallel (2 threads)",
)


def _info(shapes: dict[str, list[int]], total: int, cut: int) -> dict[str, Any]:
    """A session info with two shards cut at `cut` (the layout the SDK splits by)."""
    shards, pos = [], 0
    for j, (a, b) in enumerate(((0, cut), (cut, total))):
        tensors, pos = [], 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            lo, hi = max(a, pos), min(b, pos + size)
            if lo < hi:
                tensors.append({"name": name, "start": lo - pos, "stop": hi - pos})
            pos += size
        shards.append({"id": f"s-s{j}", "index": j, "start": a, "stop": b, "tensors": tensors})
    return {"id": "s", "params": {k: {"shape": v} for k, v in shapes.items()}, "shards": shards}
