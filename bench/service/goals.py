"""The issue's goals for bench/service/run.py, met or missed, each with the numbers and, for a
miss, the reason."""

from __future__ import annotations

from bench.common.report import PHASES, fmt_ms, fmt_n, fmt_phases
from bench.service.report import NAMES, Cell, Concurrency, find, rest

GOAL_N = 1_000_000
SMALL = 1_000
STEP_GOAL, CONC_GOAL, JSON_OTHER_SHARE = 1.5, 0.70, 0.10


def goals(cells: list[Cell], conc: list[Concurrency]) -> list[str]:
    out = []
    ns = sorted({c.n for c in cells})
    n = GOAL_N if GOAL_N in ns else ns[-1]
    note = "" if n == GOAL_N else f" (at {fmt_n(n)}: this run has no 1e6 cell)"
    # 1. binary step over Redis vs the echo-plus-Redis floor
    c, f = find(cells, n, "optd/redis/binary"), find(cells, n, "echo_redis/binary")
    if c and f:
        r = c.p50 / f.p50
        verdict = "met" if r <= STEP_GOAL else f"missed by {r / STEP_GOAL - 1:.0%}"
        line = (
            f"- Goal 1, binary step over Redis within {STEP_GOAL}x of the echo+Redis floor at 1e6"
            f"{note}: **{verdict}** - p50 {fmt_ms(c.p50)} ms vs floor {fmt_ms(f.p50)} ms = {r:.2f}x"
        )
        if r > STEP_GOAL:
            line += (
                f" ({fmt_ms(c.p50 - STEP_GOAL * f.p50)} ms over budget). Server phases: "
                f"{fmt_phases(c.phases)}; rest (HTTP I/O + framework) {fmt_ms(rest(c))} ms"
            )
        out.append(line + ".")
    # 2. JSON's extra cost is JSON's own
    for store in ("redis", "memory"):
        j, b = find(cells, n, f"optd/{store}/json"), find(cells, n, f"optd/{store}/binary")
        if not (j and b):
            continue
        gap = j.mean - b.mean
        d = {p: j.phases.get(p, 0.0) - b.phases.get(p, 0.0) for p in PHASES}
        codec = d["decode"] + d["encode"] + (rest(j) - rest(b))
        other = d["load"] + d["compute"] + d["commit"]
        share = other / gap if gap > 0 else float("nan")
        ok = abs(share) <= JSON_OTHER_SHARE
        out.append(
            f"- Goal 2, JSON may be 10x slower than binary, but only because of JSON "
            f"({store} store, {fmt_n(n)}): **{'met' if ok else 'missed'}** - JSON p50 "
            f"{fmt_ms(j.p50)} ms = {j.p50 / b.p50:.1f}x binary ({fmt_ms(b.p50)} ms). "
            f"Of the {fmt_ms(gap)} ms gap in the mean, decode +{fmt_ms(d['decode'])}, encode "
            f"+{fmt_ms(d['encode'])}, moving the bigger bodies (rest) +{fmt_ms(rest(j) - rest(b))} "
            f"= {codec / gap:.0%} is JSON; load/compute/commit differ by {fmt_ms(other)} ms "
            f"({share:.0%}; goal within {JSON_OTHER_SHARE:.0%})."
        )
    # 3. throughput of many small sessions
    by = {c.system: c for c in conc}
    for sysname, floor_name in (("optd/redis", "echo_redis"), ("optd/memory", "echo")):
        c2, f2 = by.get(sysname), by.get(floor_name)
        if not (c2 and f2):
            continue
        r = c2.rate / f2.rate
        verdict = "met" if r >= CONC_GOAL else f"missed by {1 - r / CONC_GOAL:.0%}"
        line = (
            f"- Goal 3, {c2.clients} concurrent clients on {c2.clients} 1e3 sessions, "
            f"{NAMES[sysname]}, >= {CONC_GOAL:.0%} of {NAMES[floor_name]}: **{verdict}** - "
            f"{c2.rate:.0f} vs {f2.rate:.0f} steps/s = {r:.0%}"
        )
        if r < CONC_GOAL:
            line += (
                f". The {NAMES[sysname]} process was {c2.server_cores:.2f} cores busy at "
                f"{fmt_ms(c2.cpu_ms('server'))} ms CPU a step vs the floor's "
                f"{fmt_ms(f2.cpu_ms('server'))} ms (redis-server {fmt_ms(c2.cpu_ms('redis'))} vs "
                f"{fmt_ms(f2.cpu_ms('redis'))} ms)"
            )
            one = find(cells, SMALL, f"optd/{c2.store}/binary")
            if one is not None and one.phases:
                inside = sum(one.phases.get(p, 0.0) for p in PHASES)
                line += (
                    f"; uncontended, the step's phases take {fmt_ms(inside)} ms "
                    f"({fmt_phases(one.phases)}) and {fmt_ms(rest(one))} ms of a "
                    f"{fmt_ms(one.mean)} ms request is outside them "
                    "(routing, dependencies, response, client)"
                )
        out.append(line + ".")
    return out
