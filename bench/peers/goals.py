"""The issue's goals for `python -m bench`, met or missed, each with its numbers and, for a
miss, what the measurements say dominated."""

from __future__ import annotations

from bench.common.report import PHASES, fmt_ms, fmt_n, fmt_phases
from bench.peers.results import ConcCell, MemCell, PeerCell, find, rest

OPTD = "optd/redis/binary"
BIG, MID, SMALL = 10_000_000, 1_000_000, 1_000
VS_RAY_BIG, VS_RAY_SMALL, VS_NAIVE, PER_PARAM, MEMORY, CONC = 1.0, 0.5, 50.0, 1.3, 4.0, 0.7


def _verdict(ok: bool, how: str) -> str:
    return "**met**" if ok else f"**missed** ({how})"


def _n(ns: list[int], want: int) -> tuple[int, str]:
    if want in ns:
        return want, ""
    n = max(ns)
    return n, f" (this run has no {fmt_n(want)} cell: at {fmt_n(n)})"


def _why(c: PeerCell, cells: list[PeerCell]) -> str:
    """Where optd's step went, and what the same step costs without Redis."""
    text = f"optd's phases: {fmt_phases(c.phases)}; outside them {fmt_ms(rest(c))} ms"
    mem = find(cells, c.n, c.parts, "optd/memory/binary")
    if mem:
        text += f"; the memory store's p50 is {fmt_ms(mem.p50)} ms"
    return text


def _vs_ray(cells: list[PeerCell], n: int, goal: float, name: str, note: str) -> list[str]:
    out = []
    for parts in sorted({c.parts for c in cells}):
        c, r = find(cells, n, parts, OPTD), find(cells, n, parts, "ray")
        if not c:
            continue
        if not r:
            out.append(
                f"- {name}, {parts} tensor(s){note}: **not measured** (Ray not run: see the note)"
            )
            continue
        ratio = c.p50 / r.p50
        line = (
            f"- {name}, {parts} tensor(s){note}: {_verdict(ratio <= goal, f'{ratio:.2f}x')} - "
            f"optd (Redis, binary) p50 {fmt_ms(c.p50)} ms vs Ray actor {fmt_ms(r.p50)} ms = "
            f"{ratio:.2f}x (goal <= {goal}x)"
        )
        if ratio > goal:
            line += f"; {fmt_ms(c.p50 - goal * r.p50)} ms over. {_why(c, cells)}"
            echo = find(cells, n, parts, "echo/binary")
            floor = find(cells, n, parts, "echo_redis/binary")
            if echo:
                line += (
                    f"; the bare HTTP echo of the same bytes alone takes {fmt_ms(echo.p50)} ms "
                    f"({echo.p50 / r.p50:.2f}x Ray)"
                )
            if floor:
                line += (
                    f", the echo+Redis floor {fmt_ms(floor.p50)} ms ({floor.p50 / r.p50:.2f}x Ray)"
                )
        out.append(line + ".")
    return out


def goals(cells: list[PeerCell], mem: list[MemCell], conc: list[ConcCell]) -> list[str]:
    ns = sorted({c.n for c in cells})
    out: list[str] = []
    n, note = _n(ns, MID)
    out += _vs_ray(cells, n, VS_RAY_BIG, f"{fmt_n(MID)} params, step p50 <= 1.0x Ray", note)
    if SMALL in ns:
        out += _vs_ray(cells, SMALL, VS_RAY_SMALL, f"{fmt_n(SMALL)} params, <= 0.5x Ray", "")
    else:
        out.append(f"- {fmt_n(SMALL)} params, <= 0.5x Ray: **not measured** (no 1e3 cell)")
    # naive JSON server
    for parts in sorted({c.parts for c in cells}):
        c, nv = find(cells, n, parts, OPTD), find(cells, n, parts, "naive")
        if not (c and nv):
            continue
        x = nv.p50 / c.p50
        line = (
            f"- >= {VS_NAIVE:.0f}x faster than the naive JSON server at {fmt_n(MID)}, {parts} "
            f"tensor(s){note}: {_verdict(x >= VS_NAIVE, f'{x:.0f}x')} - naive {fmt_ms(nv.p50)} ms "
            f"vs optd (Redis, binary) {fmt_ms(c.p50)} ms = {x:.1f}x"
        )
        js = find(cells, n, parts, "optd/redis/json")
        if js:
            line += f" (optd over JSON {fmt_ms(js.p50)} ms: {nv.p50 / js.p50:.1f}x)"
        if x < VS_NAIVE:
            line += f"; at {VS_NAIVE:.0f}x optd would need {fmt_ms(nv.p50 / VS_NAIVE)} ms"
            echo = find(cells, n, parts, "echo/binary")
            if echo:
                line += (
                    f", while the bare HTTP echo of the same binary bytes takes {fmt_ms(echo.p50)} "
                    f"ms (naive / echo = {nv.p50 / echo.p50:.0f}x: the most any server behind "
                    "this HTTP stack could gain)"
                )
            line += f". {_why(c, cells)}"
        out.append(line + ".")
    # time per parameter, 1e7 vs 1e6
    for parts in sorted({c.parts for c in cells}):
        a, b = find(cells, MID, parts, OPTD), find(cells, BIG, parts, OPTD)
        if not (a and b):
            out.append(
                f"- time per parameter at 1e7 within {PER_PARAM}x of 1e6, {parts} "
                "tensor(s): **not measured** (needs the full run)"
            )
            continue
        pa, pb = a.p50 / a.n * 1e6, b.p50 / b.n * 1e6  # ns per parameter
        r = pb / pa
        line = (
            f"- time per parameter at 1e7 within {PER_PARAM}x of 1e6, {parts} tensor(s): "
            f"{_verdict(r <= PER_PARAM, f'{r:.2f}x')} - {pb:.1f} ns at 1e7 vs {pa:.1f} ns at "
            f"1e6 = {r:.2f}x"
        )
        if r > PER_PARAM:
            grew = {p: (b.phases.get(p, 0) / b.n - a.phases.get(p, 0) / a.n) * 1e6 for p in PHASES}
            grew["rest"] = (rest(b) / b.n - rest(a) / a.n) * 1e6
            top = sorted(grew.items(), key=lambda kv: -kv[1])
            line += "; ns per parameter gained by phase (1e7 - 1e6): " + ", ".join(
                f"{k} {v:+.1f}" for k, v in top
            )
        out.append(line + ".")
    # memory
    for m in mem:
        if not m.key.startswith("optd/"):
            continue
        worst = max(m.ratio, m.idle_ratio) if m.idle_kb > 0 else m.ratio
        line = (
            f"- peak server memory below {MEMORY:.0f}x the state, {fmt_n(m.n)}, {m.parts} "
            f"tensor(s), {m.key}: {_verdict(worst < MEMORY, f'{worst:.2f}x')} - VmHWM "
            f"{m.peak_kb / 1024:.0f} MB: {m.growth_mb:.0f} MB above the "
            f"{m.before_kb / 1024:.0f} MB before the session ({m.ratio:.2f}x the "
            f"{m.state_bytes / 2**20:.0f} MB state)"
        )
        if m.idle_kb > 0:
            line += (
                f", {m.above_idle_mb:.0f} MB above the {m.idle_kb / 1024:.0f} MB idle at "
                f"start-up ({m.idle_ratio:.2f}x; the verdict takes the larger)"
            )
        if m.n != BIG:
            line += f" (this run's largest size is {fmt_n(m.n)}, not 1e7)"
        out.append(line + ".")
    # concurrency
    by = {c.key: c for c in conc}
    floor = by.get("echo_redis/binary")
    for key in ("optd/redis/binary", "optd/redis/binary/2p"):
        c = by.get(key)
        if not (c and floor):
            continue
        r = c.rate / floor.rate
        which = "1 API process" if key == OPTD else "2 API processes (informative: 2x the floor's"
        which += "" if key == OPTD else " processes)"
        line = (
            f"- {c.clients} concurrent clients on {c.clients} 1e3 sessions, optd Redis store, "
            f"{which}, >= {CONC:.0%} of the echo+Redis floor: "
            f"{_verdict(r >= CONC, f'{r:.0%}')} - {c.rate:.0f} vs {floor.rate:.0f} steps/s = "
            f"{r:.0%}"
        )
        if r < CONC:
            line += (
                f". optd's server processes were {c.cores('server'):.2f} cores busy at "
                f"{fmt_ms(c.cpu_ms('server'))} ms CPU a step vs the floor's "
                f"{fmt_ms(floor.cpu_ms('server'))} ms at {floor.cores('server'):.2f} cores "
                f"(redis-server {fmt_ms(c.cpu_ms('redis'))} vs "
                f"{fmt_ms(floor.cpu_ms('redis'))} ms a step)"
            )
            if c.redis_calls:
                line += (
                    f"; Redis commands a step: optd {c.calls_text()} vs the floor "
                    f"{floor.calls_text()}"
                )
            one = find(cells, SMALL, 1, OPTD)
            if one and one.phases:
                line += (
                    f"; uncontended, a 1e3 step spends {fmt_phases(one.phases)} in its phases "
                    f"and {fmt_ms(rest(one))} ms outside them"
                )
        out.append(line + ".")
    return out
