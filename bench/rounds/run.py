"""Sync rounds: rounds/s of 8 workers on one 1e3 session, against baselines in the same run.

Run: `python -m bench.rounds` (3 rounds of 3 s per cell; writes the `## Sync rounds`
section of bench/RESULTS.md) or `--quick` (1 round of 1.5 s, prints only unless --write).

A round is 8 requests (one per worker, each a binary gradient with `Optd-Worker` and
`Optd-Base-Version`, bench/common/load.py) and one optimizer step. Cells, alternating
round by round (order rotated):
- **sync, 1 API process** and **sync, 2 API processes** (worker i talks to A or B by i mod 2):
  the goal's cells (>= 150 rounds/s on one process, and not slower on two).
- **sync, 2 API processes, owners**: the same on two processes started with
  `OPTD_OWNERS=redirect`; a worker sent to the process that does not own the session gets
  one 307 and then talks to the owner (as the SDKs do, DESIGN §4 "Session owners").
- **async, 1 API process**: the same 8 workers on an async session; steps/s / 8 is the rate
  at which the same requests arrive when no one waits for anyone (each is a whole step).
- **echo floor** and **echo + Redis floor** (bench/common/floors.py, one uvicorn process):
  8 client threads posting the same body; requests/s / 8 is the most rounds/s any one
  Python API process could close if a contribution cost only the HTTP exchange (plus one
  Redis round trip) and closing cost nothing.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench.common import harness as h
from bench.common import load as ld
from bench.common import metrics as mt
from bench.common import report as rep

SECTION = "## Sync rounds (python -m bench.rounds)"
N, WORKERS, GOAL = 1_000, 8, 150.0
OWNED = "sync, 2 API processes, owners"
CELLS = ("sync, 1 API process", "sync, 2 API processes", OWNED, "async, 1 API process",
         "echo floor", "echo + Redis floor")  # fmt: skip


def echo_loop(port: int, path: str, body: bytes, seconds: float) -> tuple[float, list[float]]:
    """WORKERS threads post `body` to `path` for `seconds`: (requests/s, latencies)."""
    conns = [h.Http(port) for _ in range(WORKERS)]
    for c in conns:
        c.fresh()
    lats: list[list[float]] = [[] for _ in conns]
    start = threading.Barrier(WORKERS + 1)
    deadline = [0.0]

    def run(i: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            status, _, _ = conns[i].request("POST", path, body, ld.BIN_HEADERS)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")
            lats[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(WORKERS)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join(seconds + 60)
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    flat = [x for xs in lats for x in xs]
    return len(flat) / wall, flat


def owner_port(port: int, sid: str) -> int:
    """Where a worker sent to `port` ends up: the owner named by a 307, else `port`."""
    conn = h.Http(port)
    try:
        status, headers, _ = conn.request("GET", f"/v1/sessions/{sid}")
    finally:
        conn.close()
    if status == 307:
        return int(headers["optd-owner"].rsplit(":", 1)[1])
    if status != 200:
        raise RuntimeError(f"GET session on :{port} answered {status}")
    return port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 1.5 s per cell, < 60 s")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md (also quick)")
    args = ap.parse_args()
    rounds, seconds = (1, 1.5) if args.quick else (3, 3.0)
    write = args.write or not args.quick
    t_start = time.monotonic()
    code = h.code_state()
    procs: list[h.Proc] = []
    rates: dict[str, list[float]] = {c: [] for c in CELLS}
    lats: dict[str, list[float]] = {c: [] for c in CELLS}
    cpu: dict[str, list[float]] = {c: [] for c in CELLS}
    try:
        redis = h.start_redis()
        procs.append(redis)
        h.wait_redis(redis)
        url = f"redis://{h.HOST}:{redis.port}/0"
        api = [h.start_optd(f"optd-{x}", url) for x in "AB"]
        owned = [h.start_optd(f"optd-{x}", url, {"OPTD_OWNERS": "redirect"}) for x in "CD"]
        echo, echo_redis = h.start_floor("echo", None), h.start_floor("echo-redis", url)
        procs += [*api, *owned, echo, echo_redis]
        for p in (*api, *owned, echo, echo_redis):
            h.wait_http(p)
        body = ld.gradient_body(N)
        h.Http(echo_redis.port).request("PUT", f"/state/floor?n={N}")
        sids = {m: ld.create_session(api[0].port, N, sync_workers=WORKERS if m == "sync" else None)
                for m in ("sync", "async")}  # fmt: skip
        sids[OWNED] = ld.create_session(owned[0].port, N, sync_workers=WORKERS)
        # each worker is sent to C or D, and follows a 307 once (the SDKs cache the owner)
        owned_ports = [owner_port(owned[i % 2].port, sids[OWNED]) for i in range(WORKERS)]
        noise = h.Interference()
        progress = rep.Progress(rounds * len(CELLS))
        for r in range(rounds):
            order = CELLS[r % len(CELLS) :] + CELLS[: r % len(CELLS)]
            for cell in order:
                if cell.startswith("echo"):
                    port = echo.port if cell == "echo floor" else echo_redis.port
                    path = "/echo" if cell == "echo floor" else "/echo_redis/floor"
                    rate, got = echo_loop(port, path, body, seconds)
                    rates[cell].append(rate / WORKERS)
                    lats[cell] += got
                else:
                    mode = cell.split(",")[0]
                    use = api if "2 API" in cell else api[:1]
                    ports = [use[i % len(use)].port for i in range(WORKERS)]
                    sid = sids[mode]
                    if cell == OWNED:
                        use, ports, sid = owned, owned_ports, sids[OWNED]
                    lanes = [ld.Lane(ports[i], sid, f"w{i}") for i in range(WORKERS)]
                    pids = {"api": [p.proc.pid for p in use]}
                    load = ld.closed_loop(lanes, body, sync=mode == "sync", seconds=seconds,
                                          max_steps=10**6, pids=pids)  # fmt: skip
                    if load.errors:
                        raise RuntimeError(f"{cell}: errors {load.errors} {load.samples}")
                    per_round = 1 if mode == "sync" else WORKERS
                    rates[cell].append(load.rate / per_round)
                    lats[cell] += load.lats
                    cpu[cell].append(load.cpu_ms("api") * per_round)
                p50 = 1000 * mt.percentile(lats[cell], 50)
                progress.cell(f"{cell}: {rates[cell][-1]:.1f} rounds/s, p50 {p50:.2f} ms")
        others = noise.other_cores()
        ld.delete_sessions(api[0].port, [sids["sync"], sids["async"]])
        ld.delete_sessions(owned_ports[0], [sids[OWNED]])
    finally:
        for p in reversed(procs):
            p.stop()
    text = render(rates, lats, cpu, rounds, seconds, h.redis_version(), others, code)
    rep.finish(text, SECTION, t_start, write)


def _description() -> str:
    """The docstring's cells paragraph as markdown (one line per item)."""
    text = __doc__.split("\n\n", 2)[2]
    return "\n- ".join(" ".join(x.split()) for x in text.split("\n- "))


def render(
    rates: dict[str, list[float]],
    lats: dict[str, list[float]],
    cpu: dict[str, list[float]],
    rounds: int,
    seconds: float,
    redis: str,
    others: float,
    code: str,
) -> str:
    mean = {c: sum(v) / len(v) for c, v in rates.items()}
    one = mean["sync, 1 API process"]
    rows = [
        "| cell | rounds/s | x sync on 1 process | p50 ms (a request) | API CPU ms a round |",
        "|---|---|---|---|---|",
    ]
    for c in CELLS:
        cpu_ms = f"{sum(cpu[c]) / len(cpu[c]):.2f}" if cpu[c] else "-"
        p50 = 1000 * mt.percentile(lats[c], 50)
        rows.append(f"| {c} | {mean[c]:.1f} | {mean[c] / one:.2f} | {p50:.2f} | {cpu_ms} |")
    two, owners = mean["sync, 2 API processes"], mean[OWNED]
    met = "met" if one >= GOAL else "not met"
    echo, floor = mean["echo floor"], mean["echo + Redis floor"]
    verdict = (
        f"Goal: >= {GOAL:.0f} rounds/s on one API process ({met}: {one:.1f}), and not "
        f"slower on two ({owners / one:.2f}x with owners; {two / one:.2f}x without). The "
        f"same requests without waiting (async, each a whole step) arrive at "
        f"{mean['async, 1 API process']:.1f} rounds' worth a second. One uvicorn process "
        f"that only echoes them reaches {echo:.1f} rounds/s, and {floor:.1f} with one Redis "
        "round trip each and no work at all: a design that stores each contribution in "
        "Redis before the round closes (so that any process can close it, and a crash loses "
        f"no contribution) stays below that floor, which is {floor / GOAL:.2f}x the goal "
        "here, while a real contribution also decodes, checks and stores its gradient and "
        "every 8th request computes and commits the step. What would reach it: the owner "
        "keeping an open round in its memory and writing only the closed step (a "
        "contribution is not acknowledged before its round closes, so one lost with its "
        "process is resent by its worker), or rounds in a process not paying Python's "
        "HTTP cost per request."
    )
    return "\n".join([
        SECTION,
        "",
        _description(),
        "",
        f"{rounds} x {seconds:g} s per cell. {rep.machine(redis, others)} Code: {code}.",
        "",
        *rows,
        "",
        verdict,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
