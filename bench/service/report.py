"""The `## Service` section of bench/RESULTS.md from bench/service/run.py's cells: step
latency against the floors, the server-side phase split and many small sessions at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import metrics as mt
from bench.common.report import PHASES, fmt_bytes, fmt_ms, fmt_n, fmt_phases, machine

SECTION = "## Service (python -m bench.service)"
NAMES = {
    "optd/redis": "optd, Redis store",
    "optd/memory": "optd, memory store",
    "echo": "floor: echo",
    "echo_redis": "floor: echo + Redis",
}


@dataclass
class Cell:
    n: int
    key: str
    kind: str
    store: str
    fmt: str
    p50: float  # ms
    p90: float
    mean: float
    count: int
    req_bytes: int
    resp_bytes: int
    phases: dict[str, float] = field(default_factory=dict)  # mean ms per phase

    @property
    def system(self) -> str:
        return f"optd/{self.store}" if self.kind == "optd" else self.kind


@dataclass
class Load:
    steps: int
    seconds: float
    cpu_seconds: float  # of the client process
    lats: list[float]
    server_cpu: float = float("nan")  # seconds, the system's server process
    redis_cpu: float = float("nan")  # seconds, redis-server


@dataclass
class Concurrency:
    key: str
    kind: str
    store: str
    clients: int
    loads: list[Load]
    phases: dict[str, float]

    @property
    def rate(self) -> float:
        return sum(x.steps for x in self.loads) / sum(x.seconds for x in self.loads)

    @property
    def lats(self) -> list[float]:
        return [v for x in self.loads for v in x.lats]

    @property
    def p50(self) -> float:
        return 1000 * mt.percentile(self.lats, 50)

    @property
    def p90(self) -> float:
        return 1000 * mt.percentile(self.lats, 90)

    @property
    def client_cores(self) -> float:
        return sum(x.cpu_seconds for x in self.loads) / sum(x.seconds for x in self.loads)

    @property
    def system(self) -> str:
        return f"optd/{self.store}" if self.kind == "optd" else self.kind

    def cpu_ms(self, who: str) -> float:
        """CPU milliseconds per step of `server`, `redis` or `client`."""
        attr = {"server": "server_cpu", "redis": "redis_cpu", "client": "cpu_seconds"}[who]
        steps = sum(x.steps for x in self.loads)
        return 1000 * sum(getattr(x, attr) for x in self.loads) / max(steps, 1)

    @property
    def server_cores(self) -> float:
        return sum(x.server_cpu for x in self.loads) / sum(x.seconds for x in self.loads)


def find(cells: list[Cell], n: int, key: str) -> Cell | None:
    return next((c for c in cells if c.n == n and c.key == key), None)


def rest(c: Cell) -> float:
    return c.mean - sum(c.phases.get(p, 0.0) for p in PHASES)


def _json_estimate(cells: list[Cell], n: int) -> str:
    """Why JSON at this size is skipped, extrapolated linearly from the largest JSON cell."""
    js = [c for c in cells if c.fmt == "json" and c.kind == "optd" and c.n < n]
    if not js:
        return "too slow to repeat"
    ref = max(js, key=lambda c: (c.n, c.p50))
    k = n / ref.n
    return (
        f"too slow to repeat (~{ref.p50 * k / 1000:.1f} s a step and "
        f"~{ref.req_bytes * k / 1e6:.0f} MB of decimal text in, extrapolated from "
        f"{fmt_n(ref.n)})"
    )


def latency_table(cells: list[Cell], skipped_json: list[int]) -> list[str]:
    out = [
        "| params | format | system | p50 ms | p90 ms | p50 / echo | p50 / echo+Redis "
        "| request | response |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = ["optd/redis", "optd/memory", "echo", "echo_redis"]
    for n in sorted({c.n for c in cells} | set(skipped_json)):
        for fmt in ("binary", "json"):
            row = sorted(
                (c for c in cells if c.n == n and c.fmt == fmt), key=lambda c: order.index(c.system)
            )
            if not row:
                if n in skipped_json and fmt == "json":
                    out.append(f"| {fmt_n(n)} | json | - | skipped: {_json_estimate(cells, n)} "
                               "| | | | | |")  # fmt: skip
                continue
            echo, floor = find(cells, n, f"echo/{fmt}"), find(cells, n, f"echo_redis/{fmt}")
            for c in row:
                r1 = f"{c.p50 / echo.p50:.2f}x" if echo else "-"
                r2 = f"{c.p50 / floor.p50:.2f}x" if floor else "-"
                out.append(
                    f"| {fmt_n(n)} | {fmt} | {NAMES[c.system]} | {fmt_ms(c.p50)} | {fmt_ms(c.p90)} "
                    f"| {r1} | {r2} | {fmt_bytes(c.req_bytes)} | {fmt_bytes(c.resp_bytes)} |"
                )
    return out


def phase_table(cells: list[Cell]) -> list[str]:
    out = [
        "| params | format | store | " + " | ".join(PHASES) + " | phases sum | client mean "
        "| rest |",
        "|---|---|---|" + "---|" * (len(PHASES) + 3),
    ]
    for c in sorted((c for c in cells if c.kind == "optd"), key=lambda c: (c.n, c.fmt, c.store)):
        vals = " | ".join(fmt_ms(c.phases.get(p, float("nan"))) for p in PHASES)
        total = sum(c.phases.get(p, 0.0) for p in PHASES)
        out.append(
            f"| {fmt_n(c.n)} | {c.fmt} | {c.store} | {vals} | {fmt_ms(total)} | {fmt_ms(c.mean)} "
            f"| {fmt_ms(rest(c))} |"
        )
    return out


def concurrency_table(conc: list[Concurrency]) -> list[str]:
    echo = next((c for c in conc if c.kind == "echo"), None)
    floor = next((c for c in conc if c.kind == "echo_redis"), None)
    out = [
        "| system | clients x sessions | steps/s | / echo | / echo+Redis | p50 ms | p90 ms "
        "| steps | server cores busy | CPU ms a step: server / redis / client "
        "| server phases, mean ms a step (with queueing) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in conc:
        r1 = f"{c.rate / echo.rate:.2f}" if echo else "-"
        r2 = f"{c.rate / floor.rate:.2f}" if floor else "-"
        steps = sum(x.steps for x in c.loads)
        out.append(
            f"| {NAMES[c.system]} | {c.clients} x 1e3 | {c.rate:.0f} | {r1} | {r2} "
            f"| {fmt_ms(c.p50)} | {fmt_ms(c.p90)} | {steps} | {c.server_cores:.2f} "
            f"| {fmt_ms(c.cpu_ms('server'))} / {fmt_ms(c.cpu_ms('redis'))} / "
            f"{fmt_ms(c.cpu_ms('client'))} | {fmt_phases(c.phases) or '-'} |"
        )
    return out


def render(
    cells: list[Cell],
    conc: list[Concurrency],
    skipped_json: list[int],
    goal_lines: list[str],
    *,
    quick: bool,
    redis: str,
    others: float,
) -> str:
    mode = "`--quick` (1e3 and 1e5 only, few repeats)" if quick else "full"
    counts = {c.n: c.count for c in cells}
    reps = ", ".join(f"{fmt_n(n)}: {k}" for n, k in sorted(counts.items()))
    lines = [
        SECTION,
        "",
        "`POST /v1/sessions/{id}/step`, Adam, one float32 tensor, client-side wall time per "
        "request (stdlib http.client, keep-alive, body built once). Binary = safetensors both "
        'ways; JSON = `{"grads": {"w": {shape, dtype, data}}}` in, JSON params out. Each '
        "system is its own process (`optd serve` on the Redis store and on the memory store, one "
        "per format; the floors from bench/common/floors.py under the same uvicorn), all against "
        "one private redis-server without persistence. Floors: **echo** = a bare FastAPI handler "
        "returning the request body; **echo+Redis** = the echo plus one pipeline that GETs the "
        "session's three state arrays (params, exp_avg, exp_avg_sq; 4 bytes a parameter each) "
        "and SETs three of the same size. Systems alternate step by step within a size (order "
        f"rotated every repeat), after warm-up. Mode: {mode}; repeats per system: {reps}.",
        "",
        machine(redis, others),
        "",
        "### Step latency",
        "",
        *latency_table(cells, skipped_json),
        "",
        "### Where a step's time goes (server side)",
        "",
        "Mean ms per step from `optd_step_phase_seconds{phase}` (deltas of /metrics over the "
        "timed steps). `decode` starts when the handler starts, so it includes receiving the "
        "body and parsing it; `load` reads meta (and slots the process has not cached); "
        "`compute` is gradient assembly + clipping + the update; `commit` is the store write; "
        "`encode` builds the response body. `rest` = client mean - phases: routing, "
        "middleware, sending the response over loopback and the client reading it.",
        "",
        *phase_table(cells),
        "",
        "### Many small sessions at once",
        "",
        "Closed loop: every client thread steps its own 1e3 session (binary) for a fixed time; "
        "systems alternate per round; steps/s over all rounds. CPU per step is each "
        "process's user+system time over the timed windows divided by the steps: a server "
        "near 1.0 core busy is the limit (one uvicorn process, one event loop). The client "
        "is one Python process with a thread per session. Phase means here include waiting "
        "for the event loop, so they show queueing, not work; the uncontended split is the "
        "1e3 rows of the phase table above.",
        "",
        *concurrency_table(conc),
        "",
        "### Goals",
        "",
        *goal_lines,
    ]
    return "\n".join(lines) + "\n"
