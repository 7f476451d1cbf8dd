"""Results of bench/peers/run.py (`python -m bench`) as the `## Peers` section of
bench/RESULTS.md: the tables; the goals are bench/peers/goals.py."""

from __future__ import annotations

import importlib.metadata

from bench.common import harness as h
from bench.common.report import PHASES, fmt_bytes, fmt_ms, fmt_n, machine
from bench.peers.results import ConcCell, MemCell, PeerCell, find, rest

SECTION = "## Peers (python -m bench)"
# Why some goals stay missed however the step is tuned (the numbers are in the goal lines).
WHY_MISSED = [
    "Where a goal is missed, the floors in its line say why. **1e3 at <= 0.5x Ray**: a bare "
    "HTTP echo of the same bytes through uvicorn is already about 0.3x Ray here and the echo "
    "plus one Redis round trip about 0.55x, while a warm optd step is one HTTP exchange, one "
    "Redis round trip (the commit; no read) and the update: only a cheaper transport than "
    "HTTP/1.1 or answering before the step is in Redis (not durable) would reach 0.5x. "
    "**50x the naive JSON server at 1e6**: naive / echo is about 50x, so only a server that "
    "costs no more than an echo of 4 MB each way could meet it; optd adds the update and one "
    "4 MB Redis write to the echo. **32 sessions at 0.7x the echo+Redis floor**: the floor's "
    "handler is one pipelined round trip and no math; optd's step adds the update, the "
    "metrics and the checks per request in one Python process (its CPU per step is in the "
    "line); a second API process meets it.",
]
# ratio columns of the latency table: (header, key of the reference; "echo" = same format)
REFS = (
    ("Ray", "ray"),
    ("naive JSON", "naive"),
    ("echo", "echo"),
    ("echo+Redis", "echo_redis/binary"),
    ("numpy Adam", "numpy"),
    ("torch fused", "torch"),
)


def _ratio(c: PeerCell, ref: PeerCell | None) -> str:
    return f"{c.p50 / ref.p50:.2f}x" if ref else "-"


def latency_table(cells: list[PeerCell], labels: dict[str, str], skipped: list[str]) -> list[str]:
    head = ["params", "tensors", "system", "p50 ms", "p90 ms", "ns / param"]
    head += [f"/ {name}" for name, _ in REFS] + ["request"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = list(labels)
    for n, parts in sorted({(c.n, c.parts) for c in cells}):
        row = sorted(
            (c for c in cells if (c.n, c.parts) == (n, parts)), key=lambda c: order.index(c.key)
        )
        for c in row:
            ratios = []
            for _, ref in REFS:
                ref_key = f"echo/{c.fmt}" if ref == "echo" else ref
                ratios.append(_ratio(c, find(cells, n, parts, ref_key)))
            req = fmt_bytes(c.req_bytes) if c.req_bytes else "-"
            out.append(
                f"| {fmt_n(n)} | {parts} | {labels[c.key]} | {fmt_ms(c.p50)} | {fmt_ms(c.p90)} "
                f"| {1e6 * c.p50 / n:.1f} | {' | '.join(ratios)} | {req} |"
            )
        for text in skipped:
            if text.startswith(f"{fmt_n(n)} x{parts}:"):
                out.append(
                    f"| {fmt_n(n)} | {parts} | skipped | {text.split(':', 1)[1].strip()} |"
                    + " |" * (len(head) - 4)
                )
    return out


def phase_table(cells: list[PeerCell], labels: dict[str, str]) -> list[str]:
    out = [
        "| params | tensors | system | " + " | ".join(PHASES) + " | phases sum | client mean "
        "| rest |",
        "|---|---|---|" + "---|" * (len(PHASES) + 3),
    ]
    for c in sorted((c for c in cells if c.phases), key=lambda c: (c.n, c.parts, c.key)):
        vals = " | ".join(fmt_ms(c.phases.get(p, float("nan"))) for p in PHASES)
        total = sum(c.phases.get(p, 0.0) for p in PHASES)
        out.append(
            f"| {fmt_n(c.n)} | {c.parts} | {labels[c.key]} | {vals} | {fmt_ms(total)} "
            f"| {fmt_ms(c.mean)} | {fmt_ms(rest(c))} |"
        )
    return out


def memory_table(mem: list[MemCell], labels: dict[str, str]) -> list[str]:
    out = [
        "| params | tensors | system | RSS idle at start MB | RSS before MB | peak (VmHWM) MB "
        "| state MB | (peak - before) / state | (peak - idle) / state |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in mem:
        note = f" ({m.note})" if m.note else ""
        idle = f"{m.idle_kb / 1024:.0f}" if m.idle_kb > 0 else "-"
        by_idle = f"{m.idle_ratio:.2f}x" if m.idle_kb > 0 else "-"
        out.append(
            f"| {fmt_n(m.n)} | {m.parts} | {labels[m.key]}{note} | {idle} "
            f"| {m.before_kb / 1024:.0f} | {m.peak_kb / 1024:.0f} | {m.state_bytes / 2**20:.0f} "
            f"| {m.ratio:.2f}x | {by_idle} |"
        )
    return out


def concurrency_table(conc: list[ConcCell], labels: dict[str, str]) -> list[str]:
    by = {c.key: c for c in conc}
    refs = [
        ("Ray", "ray"),
        ("naive JSON", "naive"),
        ("echo", "echo/binary"),
        ("echo+Redis", "echo_redis/binary"),
    ]
    head = ["system", "clients x sessions", "steps/s", *(f"/ {r}" for r, _ in refs)]
    head += [
        "p50 ms",
        "p90 ms",
        "steps",
        "cores busy: server / redis / client",
        "CPU ms a step: server / redis / client",
        "Redis commands a step",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conc:
        ratios = [f"{c.rate / by[k].rate:.2f}" if k in by else "-" for _, k in refs]
        cores = " / ".join(f"{c.cores(w):.2f}" for w in ("server", "redis", "client"))
        cpu = " / ".join(fmt_ms(c.cpu_ms(w)) for w in ("server", "redis", "client"))
        out.append(
            f"| {labels[c.key]} | {c.clients} x 1e3 | {c.rate:.0f} | {' | '.join(ratios)} "
            f"| {fmt_ms(c.pct(50))} | {fmt_ms(c.pct(90))} | {c.steps} | {cores} | {cpu} "
            f"| {c.calls_text()} |"
        )
    return out


def versions(ray_version: str | None) -> str:
    def v(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    ray_text = ray_version or "not installed (Ray cells skipped)"
    return (
        f"torch {v('torch')}, ray {ray_text}, pydantic {v('pydantic')}, orjson {v('orjson')}, "
        f"redis-py {v('redis')}, safetensors {v('safetensors')}, matplotlib {v('matplotlib')}"
    )


def render(
    cells: list[PeerCell],
    mem: list[MemCell],
    conc: list[ConcCell],
    goal_lines: list[str],
    labels: dict[str, str],
    *,
    mode: str,
    reps: str,
    skipped: list[str],
    notes: list[str],
    redis: str,
    others: float,
    ray_version: str | None,
) -> str:
    lines = [
        SECTION,
        "",
        "`python -m bench` (bench/peers/run.py): optd against what users reach for instead - "
        "a **Ray actor parameter server** (bench/peers/ray_ps.py: one actor holds params and "
        "Adam m/v in numpy, `ray.get(ps.step.remote(grads))`; state lost when the actor dies) "
        "and a **naive JSON server** (bench/peers/naive_server.py: FastAPI, gradients as JSON "
        "lists, state in its process) - and floors: the Adam arithmetic alone (numpy, the same "
        "function the Ray actor and the naive server run; torch fused Adam, 1 thread), a bare "
        "HTTP **echo** "
        "of the same bytes, and the **echo+Redis** floor (the echo plus one pipelined GET+SET of "
        "params, m, v; bench/common/floors.py). Adam, float32, the same gradient every step; "
        "every system's first answer is checked against one Adam step computed in the benchmark. "
        "optd's steps are durable in Redis before the answer (Redis store; no AOF here, so "
        "durable = in redis-server); the memory store, Ray and the naive server keep state in "
        "a process. At 1e6 and more a Redis step is kept as its gradient (the gradient log, "
        "DESIGN §8; a snapshot every 8th step). **2 API processes** = two `optd serve` on the "
        "same Redis, the client alternating between them step by step (per-request load "
        "balancing: each step finds the other process's commit ahead of its cache, reads meta "
        "and replays the other's logged step, or reads the snapshot; OPTD_OWNERS=off: session "
        "owners are measured by `python -m bench.peers.owners`, below). Client-side wall time per "
        "step (stdlib http.client, keep-alive, bodies built once; Ray: the driver's `ray.get`). "
        "All systems run in the same process tree and the same run; within a size they take turns "
        f"step by step, order rotated every repeat, after warm-up. Mode: {mode}; repeats per "
        f"system: {reps}.",
        "",
        machine(redis, others)
        + " "
        + versions(ray_version)
        + ". Server code: "
        + h.code_state()
        + ".",
        "",
        *(line for n in notes for line in (f"Note: {n}", "")),
        "### Goals",
        "",
        *goal_lines,
        "",
        *WHY_MISSED,
        "",
        "### Step latency",
        "",
        "`/ X` = this row's p50 divided by X's p50 in the same cell (below 1: faster than X). "
        "`/ echo` uses the echo of the row's own format. ns / param = p50 / parameters.",
        "",
        *latency_table(cells, labels, skipped),
        "",
        "![step latency vs parameters](scaling.png)",
        "",
        "### Where optd's step time goes (server side)",
        "",
        "Mean ms per step from `optd_step_phase_seconds{phase}` (deltas of /metrics over the "
        "timed steps, summed over both processes for 2 API processes). `decode` includes "
        "receiving the body; `load` reads meta and any slots not cached; `compute` is gradient "
        "assembly + the update; `commit` is the store write; `encode` builds the response. "
        "`rest` = client mean - phases (routing, middleware, sending the response, the client).",
        "",
        *phase_table(cells, labels),
        "",
        "### Server memory around the largest cell",
        "",
        "RSS of the server process idle at start-up and right before the cell's session was "
        "created (when `clear_refs` reset its high-water mark), and its VmHWM after the cell's "
        "timed steps; state = params + m + v (12 bytes a parameter). peak - before is what the "
        "session and its steps added; peak - idle is an upper bound (it also counts heap that "
        "earlier cells left in the allocator).",
        "",
        *memory_table(mem, labels),
        "",
        "### Many small sessions at once",
        "",
        "Closed loop: every client thread steps its own 1e3 session (one tensor) for a fixed "
        "time; systems alternate per round. optd 2 API processes: client i talks to process "
        "i mod 2 (keep-alive, as behind an L4 balancer). Ray: one actor per session. CPU: "
        "user+system seconds of the system's server processes (Ray: its actors, raylet and "
        "GCS), of redis-server and of this client process, over the timed windows. Redis "
        "commands: calls per step from `INFO commandstats` deltas over the same windows "
        "(commands a Lua script runs are counted too).",
        "",
        *concurrency_table(conc, labels),
    ]
    return "\n".join(lines) + "\n"
