"""The `## Many workers` section of bench/RESULTS.md, from bench/workers/run.py's cells."""

from __future__ import annotations

from collections.abc import Sequence

from bench.common import metrics as mt
from bench.common import report as rep
from bench.workers.cells import Result

GOAL_N, GOAL_WORKERS, GOAL_WASTE = 1_000_000, 8, 0.10


def _waste(r: Result) -> float:
    return r.conflicts / r.server_steps if r.server_steps else float("nan")


def _p(r: Result, q: float) -> str:
    return rep.fmt_ms(1000 * mt.percentile(r.load.lats, q))


def table(results: Sequence[Result]) -> list[str]:
    out = [
        "| params | mode | sessions | workers | API procs | steps/s | x 1 worker | p50 ms "
        "| p90 ms | steps | conflicts | retried | mean staleness "
        "| cores busy: API / Redis / client | API CPU ms a step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r.n, r.mode): r.load.rate for r in results if r.workers == 1}
    for r in results:
        b = base.get((r.n, r.mode))
        scale = f"{r.load.rate / b:.2f}" if b else "-"
        stale = f"{r.staleness_sum / r.staleness_count:.2f}" if r.staleness_count else "-"
        sessions = "1" if r.shared else f"{r.workers} (own)"
        cores = " / ".join(f"{r.load.cores(g):.2f}" for g in ("api", "redis", "client"))
        out.append(
            f"| {rep.fmt_n(r.n)} | {r.mode} | {sessions} | {r.workers} | {r.apis} "
            f"| {r.load.rate:.1f} | {scale} | {_p(r, 50)} | {_p(r, 90)} | {r.server_steps:.0f} "
            f"| {r.conflicts:.0f} | {100 * _waste(r):.1f}% | {stale} | {cores} "
            f"| {rep.fmt_ms(r.load.cpu_ms('api'))} |"
        )
    return out


def goals(results: Sequence[Result]) -> list[str]:
    ns = sorted({r.n for r in results})
    n = GOAL_N if GOAL_N in ns else ns[-1]
    w = max(r.workers for r in results if r.n == n)
    cells = [r for r in results if r.n == n and r.shared and r.workers == w]
    if not cells:
        return ["- No cell for the goal in this run."]
    note = "" if (n, w) == (GOAL_N, GOAL_WORKERS) else f" (this run: {w} workers at {rep.fmt_n(n)})"
    worst = max(_waste(r) for r in cells)
    verdict = "met" if worst < GOAL_WASTE else "missed"
    parts = []
    for r in cells:
        by = ""
        if len(r.per_process) > 1:
            by = " - by process " + ", ".join(
                f"{'AB'[i]}: {c:.0f} of {st:.0f}" for i, (st, c) in enumerate(r.per_process)
            )
        rounds = [100 * c / st for st, c in r.by_round if st]
        spread = ""
        if len(rounds) > 1 and r.conflicts:
            spread = (f", {len(rounds)} rounds of {r.load.seconds / len(rounds):.0f} s: "
                      f"{min(rounds):.1f}% to {max(rounds):.1f}%")  # fmt: skip
        parts.append(
            f"{r.mode}, {r.apis} API process{'es' if r.apis > 1 else ''}: {r.conflicts:.0f} "
            f"conflicts / {r.server_steps:.0f} steps = {100 * _waste(r):.1f}%{by}{spread} "
            f"({r.load.rate:.1f} steps/s, p50 {_p(r, 50)} ms, API CPU "
            f"{rep.fmt_ms(r.load.cpu_ms('api'))} ms a step)"
        )
    one = [r for r in cells if r.apis == 1 and r.conflicts]
    inside = (
        "; one API process lost races too, so steps inside one process were not serialised"
        if one
        else "; one API process had none (its per-session asyncio lock queues the steps)"
    )
    out = [
        f"- Goal: with {GOAL_WORKERS} workers on one {rep.fmt_n(GOAL_N)}-parameter session, "
        f"wasted (retried) compute under {GOAL_WASTE:.0%} of steps{note}: **{verdict}** - "
        + "; ".join(parts)
        + ". A conflict is one step computed and committed, then refused by the "
        "compare-and-set because another writer moved the version first, and recomputed "
        f"after a reload{inside}. On Redis every async step takes the session's advisory "
        "lock before it loads (DESIGN.md §8), so writers in different processes queue "
        "instead of computing steps that lose (this cell runs more rounds than the others). "
        "Sync rounds are closed once by the request that completes them; a close that "
        "loses its compare-and-set is not counted by this metric."
    ]
    solo = next((r for r in results if (r.n, r.mode, r.workers) == (n, "sync", 1)), None)
    for r in cells:
        if r.mode == "sync" and solo is not None and r.load.steps:
            out.append(
                f"- Sync, {w} workers on one {rep.fmt_n(n)} session, {r.apis} API: "
                f"{r.load.rate:.2f} rounds/s, API CPU {rep.fmt_ms(r.load.cpu_ms('api'))} ms a "
                f"round vs {rep.fmt_ms(solo.load.cpu_ms('api'))} ms for one worker "
                f"({r.load.cpu_ms('api') / solo.load.cpu_ms('api'):.0f}x for {w}x the "
                "gradients)."
            )
    return out


def notes(results: Sequence[Result]) -> list[str]:
    out = []
    for r in results:
        where = (
            f"{rep.fmt_n(r.n)} {r.mode}, {r.workers} workers on "
            f"{'one session' if r.shared else 'own sessions'}, {r.apis} API"
        )
        if r.load.errors:
            first = "; ".join(f"{k}: `{v.strip()}`" for k, v in r.load.samples.items())
            out.append(f"- {where}: non-200 answers {r.load.errors} (first of each: {first}).")
        if abs(r.server_steps - r.load.steps) > 0.5:
            out.append(
                f"- {where}: the sessions' versions moved {r.load.steps} but the servers "
                f"counted {r.server_steps:.0f} steps."
            )
        if r.stale_refusals:
            out.append(f"- {where}: {r.stale_refusals:.0f} stale refusals.")
    return out or ["- Every answer was 200; every version step matched `optd_steps_total`."]


def render(
    results: Sequence[Result],
    section: str,
    *,
    quick: bool,
    rounds: int,
    sizes: Sequence[tuple[int, float]],
    redis: str,
    others: float,
    code: str,
) -> str:
    mode = "`--quick` (1e3 only, 1 and 4 workers)" if quick else "full"
    secs = ", ".join(f"{rep.fmt_n(n)}: {rounds} x {s:g} s" for n, s in sizes)
    return "\n".join([
        section,
        "",
        "Closed loop: each worker is a client thread with its own keep-alive connection "
        "(stdlib http.client) stepping Adam on one float32 tensor with a safetensors gradient "
        "built once and the full binary params back, sending `Optd-Worker` and "
        "`Optd-Base-Version`. **1 API process** = every worker talks to process A; "
        "**2 API processes** = worker i talks to A or B by i mod 2 (one worker keeps one "
        "connection, so with 1 worker the two are the same and only one is run). Both "
        "`optd serve` processes use one private redis-server (no persistence). Sync sessions "
        "are `mode: \"sync\", workers: N` (N = the workers sharing the session, 1 for a "
        "session of its own); a round is one step, and latency is a worker's request time "
        "(it includes waiting for the round). steps/s = the sessions' version increments / "
        "wall time, so a sync round counts once; `x 1 worker` divides by the 1-worker cell of "
        "the same size and mode. Conflicts and steps are deltas of `optd_commit_conflicts_total` "
        "and `optd_steps_total` summed over the API processes; retried = conflicts / steps. "
        "Mean staleness (async) is from `optd_staleness`. Cores busy = CPU seconds over wall "
        "time of the API processes, redis-server and the client (all its threads). The 1- and "
        f"2-process configurations alternate round by round. Mode: {mode}; timed: {secs} per "
        "configuration and cell, after a warm-up on fresh sessions.",
        "",
        rep.machine(redis, others) + f" Server code: commit {code}.",
        "",
        *table(results),
        "",
        "### Goal",
        "",
        *goals(results),
        "",
        "### Anomalies",
        "",
        *notes(results),
    ]) + "\n"  # fmt: skip
