"""The words bench/shards/run.py writes around its numbers: the goals' verdicts, and what
the same run's floors say binds."""

from __future__ import annotations

import os

from bench.common import report as rep
from bench.shards.floors import FLOORS

BASE = "1 process, shards 1"  # every ratio's denominator: the unsharded session, 1 process
CORES = os.cpu_count() or 1  # a step's CPU floor: its CPU seconds spread over every core


def goals(cells: dict[tuple[int, int], dict[str, tuple[float, float, float]]]) -> list[str]:
    out = []

    def line(what: str, got: float, goal: float) -> None:
        verdict = "**met**" if got <= goal else f"**missed** ({got:.2f}x)"
        out.append(f"- {what}: {verdict} - {got:.2f}x (goal <= {goal}x)")

    for (n, t), cell in cells.items():
        two = cell.get("2 processes, shards 2")
        if two is None:
            continue
        size = f"{rep.fmt_n(n)} params, {t} tensor(s)"
        if n >= 10_000_000:
            line(f"{size}: shards 2 on 2 processes / unsharded on 1", two[0] / cell[BASE][0], 0.65)
        if "Ray actor" in cell:
            goal = 1.0 if t == 1 else 0.8
            line(
                f"{size}: shards 2 on 2 processes / Ray actor", two[0] / cell["Ray actor"][0], goal
            )
    return out


def why(
    cells: dict[tuple[int, int], dict[str, tuple[float, float, float]]],
    floor_cells: dict[tuple[int, int], dict[str, float]],
) -> list[str]:
    """The paragraph on the biggest size: what its numbers say binds."""
    (n, t), cell = max(cells.items(), key=lambda kv: kv[0][0])
    two = cell.get("2 processes, shards 2")
    if two is None:
        return []
    base, (_, _, cpu1) = cell[BASE][0], cell[BASE]
    f = floor_cells[(n, t)]
    echo1, echo2 = f[FLOORS[2]], f[FLOORS[3]]
    ray = cell.get("Ray actor")
    ray_text = (
        f" Ray's step is {ray[0] * 1e3:.0f} ms with {ray[2] * 1e3:.0f} ms of CPU: one "
        "object-store transfer each way, no HTTP, nothing durable."
        if ray
        else ""
    )
    return [
        f"What binds, from the same run ({rep.fmt_n(n)} parameters): a 2-shard step on two "
        f"processes used {two[2] * 1e3:.0f} ms of CPU across every process (client, both "
        f"API processes, Redis); spread perfectly over this machine's {CORES} cores that "
        f"alone is {two[2] / CORES * 1e3:.0f} ms, {two[2] / CORES / base:.2f}x the "
        "unsharded step's p50, against a goal of 0.65x, before any waiting. The unsharded "
        f"step already keeps the cores busy ({cpu1 * 1e3:.0f} ms of CPU: "
        f"{cpu1 / CORES / base:.2f}x its p50 over {CORES} cores). Sharding divides the "
        "servers' work but adds work of its own (a prepare and a commit per shard: four "
        "HTTP exchanges instead of one) and leaves the client's: the step's bytes through "
        f"the SDK's HTTP client and an echo take {echo1 * 1e3:.0f} ms as one body and "
        f"{echo2 * 1e3:.0f} ms as two halves in parallel threads (one Python process: the "
        f"halves contend for its interpreter), {echo1 / base:.2f}x the unsharded step."
        + ray_text
        + " On one 2-core machine, with a Python HTTP client and server and every step "
        "durable in Redis before its answer, no layout of shards and processes reaches "
        "0.65x or Ray: that takes more cores or machines (below), or a client and server "
        "that move bytes without Python's per-chunk work.",
        "",
    ]


MACHINES = (
    "Several machines: with shard k's owner on machine k and Redis Cluster (each shard "
    "session's keys in its own slot, so shards spread over masters), each API process "
    "decodes, updates, logs and encodes 1/K of the parameters on its own cores, network "
    "card and Redis master, so the servers' share of a step falls about as 1/K; what "
    "stays is the client's: its link carries the whole gradient out and the whole "
    "parameters back (2 x 40 MB at 1e7 parameters: about 64 ms on 10 Gb/s). For one big "
    "session: an API process per machine, `shards` = the number of machines, a Redis "
    "Cluster master per machine, and clients whose link carries the parameter set per "
    "step (or DiLoCo rounds, which send it every H steps). On one machine, shards buy "
    "nothing but the spread of a session's keys over a cluster's masters."
)
