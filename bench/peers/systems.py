"""The systems bench/peers/run.py compares, their server processes and how each opens a
session on a problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.common import harness as h
from bench.peers import cells as pc

LABELS = {
    "optd/redis/binary": "optd, Redis, binary",
    "optd/redis/binary/2p": "optd, Redis, binary, 2 API processes",
    "optd/memory/binary": "optd, memory store, binary",
    "optd/redis/json": "optd, Redis, JSON",
    "optd/memory/json": "optd, memory store, JSON",
    "ray": "Ray actor parameter server",
    "naive": "naive JSON server (FastAPI)",
    "echo/binary": "floor: HTTP echo, binary",
    "echo/json": "floor: HTTP echo, JSON",
    "echo_redis/binary": "floor: echo + Redis",
    "numpy": "floor: numpy Adam",
    "torch": "floor: torch fused Adam",
}
# optd processes: name -> Redis store (True) or memory store
OPTD_PROCS = {
    "redis-binary": True,
    "redis-json": True,
    "memory-binary": False,
    "memory-json": False,
    "redis-2a": True,
    "redis-2b": True,
}


@dataclass
class System:
    """A benchmarked system: how to open a session on a problem, and its server processes."""

    key: str
    kind: str  # optd | ray | naive | echo | echo_redis | numpy | torch
    opener: Callable[[pc.Problem], pc.Session]
    json: bool = False  # not run above the JSON size limit
    procs: tuple[h.Proc, ...] = ()  # optd: for /metrics and memory; else for CPU

    @property
    def label(self) -> str:
        return LABELS[self.key]


def start_servers(procs: dict[str, h.Proc]) -> None:
    """redis-server, the optd processes, the two floors and the naive server, all started
    before waiting for any (they load in parallel); registered in `procs` as they start."""
    redis = h.start_redis()
    procs["redis"] = redis
    h.wait_redis(redis)
    url = f"redis://{h.HOST}:{redis.port}/0"
    for name, on_redis in OPTD_PROCS.items():
        procs[name] = h.start_optd(f"optd-{name}", url if on_redis else None)
    procs["echo"] = h.start_floor("floor-echo", None)
    procs["echo_redis"] = h.start_floor("floor-echo-redis", url)
    procs["naive"] = h.start_module("naive", "bench.peers.naive_server")
    for name, p in procs.items():
        if name != "redis":
            h.wait_http(p)


def build(procs: dict[str, h.Proc], actor_cls: object | None, torch_ok: bool) -> list[System]:
    """Every system, in the order of the report's rows."""

    def optd(key: str, fmt: str, *names: str) -> System:
        ps = tuple(procs[n] for n in names)
        ports = [p.port for p in ps]
        opener = lambda pb: pc.OptdSession(key, ports, fmt, pb)  # noqa: E731
        return System(key, "optd", opener, fmt == "json", ps)

    echo, echo_redis, naive = procs["echo"], procs["echo_redis"], procs["naive"]
    out = [
        optd("optd/redis/binary", "binary", "redis-binary"),
        optd("optd/redis/binary/2p", "binary", "redis-2a", "redis-2b"),
        optd("optd/memory/binary", "binary", "memory-binary"),
        optd("optd/redis/json", "json", "redis-json"),
        optd("optd/memory/json", "json", "memory-json"),
    ]
    if actor_cls is not None:
        out.append(System("ray", "ray", lambda pb: pc.RaySession("ray", actor_cls, pb)))
    out += [
        System("naive", "naive",
               lambda pb: pc.NaiveSession("naive", naive.port, pb), True, (naive,)),
        System("echo/binary", "echo",
               lambda pb: pc.EchoSession("echo/binary", echo.port, "binary", pb), False, (echo,)),
        System("echo/json", "echo",
               lambda pb: pc.EchoSession("echo/json", echo.port, "json", pb), True, (echo,)),
        System("echo_redis/binary", "echo_redis",
               lambda pb: pc.EchoRedisSession("echo_redis/binary", echo_redis.port, "binary", pb),
               False, (echo_redis,)),
        System("numpy", "numpy", lambda pb: pc.NumpySession("numpy", pb)),
    ]  # fmt: skip
    if torch_ok:
        out.append(System("torch", "torch", lambda pb: pc.TorchSession("torch", pb)))
    return out
