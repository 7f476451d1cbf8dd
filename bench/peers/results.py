"""What bench/peers/run.py measures, cell by cell (latency, memory, throughput), and finding
them again: built by the run and its load, read by the report, the goals and the plot."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import metrics as mt
from bench.common.report import PHASES


@dataclass
class PeerCell:
    n: int
    parts: int
    key: str
    kind: str
    p50: float  # ms
    p90: float
    mean: float
    count: int
    req_bytes: int
    resp_bytes: int
    phases: dict[str, float] = field(default_factory=dict)  # optd: mean ms per phase

    @property
    def fmt(self) -> str:
        return "json" if "json" in self.key or self.kind == "naive" else "binary"


@dataclass
class MemCell:
    n: int
    parts: int
    key: str
    before_kb: int  # RSS when the high-water mark was reset
    peak_kb: int  # VmHWM after the cell's steps
    state_bytes: int
    idle_kb: int = -1  # RSS of the idle process at start-up, before any session (optd)
    note: str = ""

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.before_kb) / 1024

    @property
    def ratio(self) -> float:
        return self.growth_mb * 1024 * 1024 / self.state_bytes

    @property
    def above_idle_mb(self) -> float:
        """Peak above the process's idle size: an upper bound on what the session needed (it
        also counts heap earlier cells left behind in the allocator)."""
        return (self.peak_kb - self.idle_kb) / 1024 if self.idle_kb > 0 else float("nan")

    @property
    def idle_ratio(self) -> float:
        return self.above_idle_mb * 1024 * 1024 / self.state_bytes


@dataclass
class ConcCell:
    key: str
    clients: int
    steps: int
    seconds: float
    lats: list[float]  # seconds
    cpu: dict[str, float]  # CPU seconds: server, redis, client
    redis_calls: dict[str, float] = field(default_factory=dict)  # per step, by command

    def calls_text(self) -> str:
        top = sorted(self.redis_calls.items(), key=lambda kv: -kv[1])
        total = sum(self.redis_calls.values())
        return f"{total:.1f} (" + ", ".join(f"{k} {v:.2f}" for k, v in top) + ")" if top else "-"

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    def pct(self, q: float) -> float:
        return 1000 * mt.percentile(self.lats, q)

    def cpu_ms(self, who: str) -> float:
        return 1000 * self.cpu.get(who, float("nan")) / max(self.steps, 1)

    def cores(self, who: str) -> float:
        return self.cpu.get(who, float("nan")) / self.seconds if self.seconds else float("nan")


def find(cells: list[PeerCell], n: int, parts: int, key: str) -> PeerCell | None:
    return next((c for c in cells if (c.n, c.parts, c.key) == (n, parts, key)), None)


def rest(c: PeerCell) -> float:
    return c.mean - sum(c.phases.get(p, 0.0) for p in PHASES)
