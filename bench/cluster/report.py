"""The `## Redis Cluster` section of bench/RESULTS.md, from bench/cluster/run.py's cells."""

from __future__ import annotations

from collections.abc import Sequence

from bench.cluster.cells import LatCell, LoadCell
from bench.common import metrics as mt
from bench.common import report as rep

NAMES = {"redis": "one Redis", "cluster": "cluster", "cluster_wait": "cluster + WAIT 1"}
ROUTING_GOAL = 1.1


def _lat(cells: Sequence[LatCell], n: int, system: str) -> LatCell | None:
    return next((c for c in cells if c.n == n and c.system == system), None)


def _load(cells: Sequence[LoadCell], c: LoadCell, system: str) -> LoadCell | None:
    return next(
        (x for x in cells if (x.sessions, x.n, x.apis, x.system) == (c.sessions, c.n, c.apis,
                                                                      system)),
        None,
    )  # fmt: skip


def _delta(ms: float) -> str:
    return f"{'+' if ms >= 0 else '-'}{rep.fmt_ms(abs(ms))}"


def latency_table(cells: Sequence[LatCell]) -> list[str]:
    out = [
        "| params | system | p50 ms | p90 ms | p50 / one Redis | p50 / cluster | steps "
        "| server phases, mean ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        one, cl = _lat(cells, c.n, "redis"), _lat(cells, c.n, "cluster")
        r1 = f"{c.p(50) / one.p(50):.2f}x" if one else "-"
        r2 = f"{c.p(50) / cl.p(50):.2f}x" if cl else "-"
        out.append(
            f"| {rep.fmt_n(c.n)} | {NAMES[c.system]} | {rep.fmt_ms(c.p(50))} "
            f"| {rep.fmt_ms(c.p(90))} | {r1} | {r2} | {len(c.lats)} "
            f"| {rep.fmt_phases(c.phases) or '-'} |"
        )
    return out


def load_table(cells: Sequence[LoadCell]) -> list[str]:
    out = [
        "| sessions x params | API procs | system | steps/s | / one Redis | / 1 API proc "
        "| p50 ms | p90 ms | steps | cores busy: API / Redis (all nodes) / client "
        "| CPU ms a step: API / Redis |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        one = _load(cells, c, "redis")
        single = next((x for x in cells if (x.sessions, x.n, x.system, x.apis)
                       == (c.sessions, c.n, c.system, 1)), None)  # fmt: skip
        r1 = f"{c.load.rate / one.load.rate:.2f}" if one else "-"
        r2 = f"{c.load.rate / single.load.rate:.2f}" if single else "-"
        cores = " / ".join(f"{c.load.cores(g):.2f}" for g in ("api", "redis", "client"))
        lats = c.load.lats
        out.append(
            f"| {c.sessions} x {rep.fmt_n(c.n)} | {c.apis} | {NAMES[c.system]} "
            f"| {c.load.rate:.1f} | {r1} | {r2} | {rep.fmt_ms(1000 * mt.percentile(lats, 50))} "
            f"| {rep.fmt_ms(1000 * mt.percentile(lats, 90))} | {c.load.steps} | {cores} "
            f"| {rep.fmt_ms(c.load.cpu_ms('api'))} / {rep.fmt_ms(c.load.cpu_ms('redis'))} |"
        )
    return out


def goals(lat: Sequence[LatCell], loads: Sequence[LoadCell]) -> list[str]:
    out = []
    for n in sorted({c.n for c in lat}):
        one, cl, wt = (_lat(lat, n, s) for s in ("redis", "cluster", "cluster_wait"))
        if one and cl:
            r = cl.p(50) / one.p(50)
            verdict = "met" if r < ROUTING_GOAL else "missed"
            out.append(
                f"- Goal: the cluster's routing overhead under {ROUTING_GOAL}x of one Redis at "
                f"p50 for one session, {rep.fmt_n(n)} parameters: **{verdict}** - p50 "
                f"{rep.fmt_ms(cl.p(50))} ms on the cluster vs {rep.fmt_ms(one.p(50))} ms on one "
                f"Redis = {r:.2f}x ({_delta(cl.p(50) - one.p(50))} ms a step)."
            )
        if cl and wt:
            out.append(
                f"- Cost of `OPTD_REDIS_WAIT_REPLICAS=1`, one session, {rep.fmt_n(n)}: p50 "
                f"{rep.fmt_ms(wt.p(50))} ms vs {rep.fmt_ms(cl.p(50))} ms without WAIT = "
                f"{wt.p(50) / cl.p(50):.2f}x ({_delta(wt.p(50) - cl.p(50))} ms a step)."
            )
    ratios = []
    for c in loads:
        if c.system != "cluster_wait":
            continue
        base = _load(loads, c, "cluster")
        if base:
            ratios.append(
                f"{c.sessions} x {rep.fmt_n(c.n)} with {c.apis} API: "
                f"{c.load.rate / base.load.rate:.2f}x"
            )
    if ratios:
        out.append("- Throughput with WAIT 1 / without, same cluster: " + "; ".join(ratios) + ".")
    return out


def render(
    lat: Sequence[LatCell],
    loads: Sequence[LoadCell],
    section: str,
    *,
    quick: bool,
    rounds: int,
    load_sizes: Sequence[tuple[int, int, float]],
    lat_sizes: Sequence[tuple[int, int, int]],
    redis: str,
    others: float,
    code: str,
) -> str:
    mode = "`--quick` (1e3 only, 1 and 2 API processes)" if quick else "full"
    timed = ", ".join(f"{s} x {rep.fmt_n(n)}: {rounds} x {t:g} s" for s, n, t in load_sizes)
    reps = ", ".join(f"{rep.fmt_n(n)}: {r}" for n, r, _ in lat_sizes)
    errors = [
        f"- {c.sessions} x {rep.fmt_n(c.n)}, {c.apis} API, {NAMES[c.system]}: non-200 "
        f"{c.load.errors} (first of each: "
        + "; ".join(f"{k}: `{v.strip()}`" for k, v in c.load.samples.items())
        + ")."
        for c in loads
        if c.load.errors
    ]
    return "\n".join([
        section,
        "",
        "Three systems, each with its own `optd serve` processes: **one Redis** (a private "
        "redis-server, no persistence); **cluster** = a private Redis Cluster of 3 masters + "
        "3 replicas on loopback (`redis-cli --cluster create --cluster-replicas 1`, no "
        "persistence) with `OPTD_REDIS_CLUSTER=1`; **cluster + WAIT 1** = the same cluster "
        "with `OPTD_REDIS_WAIT_REPLICAS=1` (a step is acknowledged once a replica has it; "
        "replication itself runs in both cluster systems). Adam, one float32 tensor, "
        "safetensors both ways, stdlib http.client with keep-alive. **One session**: one "
        "client, one API process, the systems take turns step by step (order rotated), after "
        f"warm-up; steps per system {reps}. **Throughput**: a closed loop with one client "
        "thread per session, session i's thread on API process i mod k (its own keep-alive "
        "connection); the systems alternate round by round; steps/s = version increments / "
        "wall time. Cores busy = CPU seconds / wall time of the system's API processes, its "
        "redis-server(s) (all 6 nodes for the cluster) and the client. Mode: "
        f"{mode}; timed {timed} per system and API count.",
        "",
        rep.machine(redis, others) + f" Server code: commit {code}.",
        "",
        "### One session: step latency",
        "",
        *latency_table(lat),
        "",
        "### Throughput",
        "",
        *load_table(loads),
        "",
        "### Goals and ratios",
        "",
        *goals(lat, loads),
        *(["", "### Anomalies", "", *errors] if errors else []),
    ]) + "\n"  # fmt: skip
