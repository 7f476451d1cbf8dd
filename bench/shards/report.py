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
    echo = min(echo1, echo2)
    cpu_f, echo_f = two[2] / CORES / base, echo / base
    beats_ray = ray is not None and echo > ray[0]
    if max(cpu_f, echo_f) > 0.65:
        which = "the client's bytes" if echo_f > 0.65 else "the CPU spread over every core"
        verdict = (
            f" So on this machine no layout of shards and processes reaches 0.65x: {which} "
            f"alone take{'' if echo_f > 0.65 else 's'} longer"
            + (
                ", and none reaches Ray: the client's bytes alone outlast Ray's whole step"
                if beats_ray
                else ""
            )
            + ". That takes a client that moves bytes without Python's per-chunk work, "
            "or more machines (below)."
        )
    else:
        verdict = (
            " The floors leave room below 0.65x here (what is missing is overlap between "
            "client, servers and Redis on two cores)"
            + (
                "; not below Ray: the client's bytes alone outlast Ray's whole step."
                if beats_ray
                else "."
            )
        )
    others = []
    for (n2, t2), c2 in sorted(cells.items()):
        if (n2, t2) == (n, t) or "Ray actor" not in c2:
            continue
        e2 = min(floor_cells[(n2, t2)][FLOORS[2]], floor_cells[(n2, t2)][FLOORS[3]])
        b2, r2 = c2[BASE][0], c2["Ray actor"][0]
        others.append(
            f" At {rep.fmt_n(n2)} parameters in {t2} tensors the client's bytes through httpx "
            f"take {e2 * 1e3:.1f} ms ({e2 / r2:.2f}x Ray's step); the unsharded step's other "
            f"{(b2 - e2) * 1e3:.1f} ms are the server's (decode, update, the Redis commit, "
            "encode, per tensor), and a shard adds a prepare and a commit: at this size "
            "sharding only costs."
        )
    return [
        f"What binds, from the same run ({rep.fmt_n(n)} parameters). "
        "The step's bytes through the SDK's HTTP client (httpx) and a bare echo server, "
        f"encoded and decoded as the SDK does, take {echo1 * 1e3:.0f} ms as one body and "
        f"{echo2 * 1e3:.0f} ms as two halves in parallel threads (one Python process: the "
        f"halves contend for its interpreter): {echo / base:.2f}x the unsharded step, "
        "against a goal of 0.65x; a sharded step moves the same bytes, plus a prepare and "
        "a commit per shard (four HTTP exchanges instead of one). The machine's CPU: a "
        f"2-shard step on two processes used {two[2] * 1e3:.0f} ms of CPU across every "
        f"process (client, both API processes, Redis), {two[2] / CORES / base:.2f}x the "
        f"unsharded p50 when spread perfectly over {CORES} cores; the unsharded step "
        f"{cpu1 * 1e3:.0f} ms ({cpu1 / CORES / base:.2f}x)." + ray_text + verdict,
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
