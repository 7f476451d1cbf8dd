"""Two API processes behind a round-robin balancer, with and without session owners.

Run (from the repository root): `python -m bench.peers.owners [--quick] [--write]`.

Issue #18 item 1: with per-request round robin over two `optd serve` processes on one
Redis, each step finds the other process's commit ahead of its cache (it reads meta and
replays the other's logged step, or reads the snapshot): 2-6x one process's p50 in the
Peers table. With session owners (DESIGN §4) the non-owner answers 307 and the Python SDK
remembers the owner, so every later step of the session goes straight to it.

Systems, all driven by the Python SDK (`optd_client.Client`, safetensors, Adam, one
float32 tensor, the same gradient every step), each on its own `optd serve` processes
sharing one private redis-server (no persistence):

- `1 process`: one process, the client talks to it (owners at their default, redirect).
- `2 processes, round robin, owners off`: OPTD_OWNERS=off, the client's requests alternate
  between the two (an httpx transport playing a per-request balancer at http://balancer).
- `2 processes, round robin, owners`: the same with OPTD_OWNERS=redirect; requests to the
  balancer alternate, requests to a session's remembered owner go to it directly.

Within a size the systems take turns step by step, order rotated every repeat, after
warm-up; client-side wall time per step. The ratio is each p50 over `1 process`'s.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import httpx
import numpy as np
from optd_client import Client

from bench.common import harness as h
from bench.common import report as rep
from bench.peers import procs as pp

# (parameters, repeats, warm-up steps)
FULL = [(100_000, 120, 4), (1_000_000, 50, 3), (10_000_000, 10, 2)]
QUICK = [(100_000, 20, 2), (1_000_000, 8, 2)]
SECTION = "## Session owners (python -m bench.peers.owners)"


class RoundRobin(httpx.BaseTransport):
    """A per-request balancer in the client: requests for http://balancer go to the next
    backend in turn (without an extra hop); any other URL (an owner) is sent as is."""

    def __init__(self, ports: list[int]) -> None:
        self.inner = httpx.HTTPTransport()
        self.ports = itertools.cycle(ports)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "balancer":
            port = next(self.ports)
            request.url = request.url.copy_with(host=h.HOST, port=port)
            request.headers["host"] = f"{h.HOST}:{port}"
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def systems(procs: dict[str, h.Proc]) -> dict[str, Callable[[], Client]]:
    one = f"http://{h.HOST}:{procs['one'].port}"
    off = [procs["off-a"].port, procs["off-b"].port]
    own = [procs["own-a"].port, procs["own-b"].port]
    return {
        "1 process": lambda: Client(one),
        "2 processes, round robin, owners off": lambda: Client(
            "http://balancer", transport=RoundRobin(off)
        ),
        "2 processes, round robin, owners (SDK follows)": lambda: Client(
            "http://balancer", transport=RoundRobin(own)
        ),
    }


def measure(n: int, repeats: int, warmup: int, makers: dict[str, Callable[[], Client]]) -> dict:
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g = {"w": (rng.standard_normal(n, dtype=np.float32) * np.float32(0.01))}
    clients = {k: make() for k, make in makers.items()}
    sessions = {k: c.create_session("adam", {"w": p0}, lr=1e-3) for k, c in clients.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    try:
        for _ in range(warmup):
            for s in sessions.values():
                s.step(g)
        keys = list(sessions)
        for r in range(repeats):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                sessions[k].step(g)
                times[k].append(time.perf_counter() - t0)
    finally:
        for s in sessions.values():
            s.delete()
        for c in clients.values():
            c.close()
    return {k: (statistics.median(v), float(np.percentile(v, 90))) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    procs: dict[str, h.Proc] = {}
    redis = procs["redis"] = h.start_redis()
    h.wait_redis(redis)
    url = f"redis://{h.HOST}:{redis.port}/0"
    for name, mode in (("one", "redirect"), ("off-a", "off"), ("off-b", "off")) + (
        ("own-a", "redirect"),
        ("own-b", "redirect"),
    ):
        procs[name] = h.start_optd(f"optd-{name}", url, {"OPTD_OWNERS": mode})
    for name, p in procs.items():
        if name != "redis":
            h.wait_http(p)
    noise = pp.Noise()
    rows = []
    for n, repeats, warmup in QUICK if args.quick else FULL:
        cell = measure(n, repeats, warmup, systems(procs))
        base = cell["1 process"][0]
        for k, (p50, p90) in cell.items():
            rows.append(
                f"| {n:.0e}".replace("e+0", "e")
                + f" | {k} | {p50 * 1e3:.2f} | {p90 * 1e3:.2f} | {p50 / base:.2f}x |"
            )
            print(rows[-1], flush=True)
    others = noise.other_cores()
    served = ", ".join(
        f"{name} {int(steps(procs[name].port))}" for name in ("off-a", "off-b", "own-a", "own-b")
    )
    h.stop_all()
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python -m bench.peers.owners` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
            f" server code {h.code_state()}; processes other than the benchmark's used "
            f"{others:.2f} cores on average of this shared 2-core machine: noisy). Python SDK, "
            "safetensors, Adam, one float32 tensor; the ratio is p50 over `1 process`'s "
            "(goal for owners: <= 1.25x). Two API processes on one Redis behind a per-request "
            "round-robin balancer, with and without session owners (DESIGN §4), against one "
            "process; absolute times include the SDK's httpx client (the Peers table's lean "
            "http.client is faster) on a loaded machine: compare ratios. See the module's "
            "docstring for the setup. Steps "
            f"applied by each process of the two pairs (warm-up included): {served}.",
            "",
            "| params | system | p50 ms | p90 ms | / 1 process |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    if args.write:
        rep.write_section(text, SECTION)


def steps(port: int) -> float:
    text = h.Http(port).request("GET", "/metrics")[2].decode()
    return sum(
        float(line.split()[1]) for line in text.splitlines() if line.startswith("optd_steps_total ")
    )


if __name__ == "__main__":
    main()
