"""Where a small step's time goes outside the engine: three ways to look at it.

    python -m bench.service.profile asgi [--steps N] [--repeats R] [--profile]
        The ASGI app called directly (no sockets, no uvicorn): microseconds per step, split
        into Engine.step and everything else (routing, dependencies, handler, response),
        best of R repeats; --profile runs once under cProfile instead.
    python -m bench.service.profile serve [--steps N]
        An in-process uvicorn (uvloop + httptools, as `optd serve`) in a thread under
        cProfile, driven by a stdlib http.client keep-alive loop from the main thread.
    python -m bench.service.profile ab --tree base=/tmp/optd-base --tree new=. [--echo]
        `optd serve` from each source tree (a directory holding an `app` package, e.g. a
        copy of an older revision's app/) as its own process on the memory store, and with
        --echo the bare FastAPI echo of bench/common/floors.py; stepped in turns, order rotated
        every round, so drift in a noisy machine hits all alike. Prints ms per step (median
        of the rounds' means) and each server's CPU per step.

One float32 tensor of --n parameters (1e3 by default), Adam, safetensors both ways, as the
`memory binary` cell of bench/service/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from safetensors.numpy import save as st_save

from bench.common import harness as h
from bench.common.slots import BIN_HEADERS, CONFIG, make_bodies


def _create_body(n: int) -> bytes:
    import numpy as np

    init = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    return st_save({"w": init}, metadata={"config": orjson.dumps(CONFIG).decode()})


def _print_stats(prof: cProfile.Profile, steps: int, top: int) -> None:
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)
    print(out.getvalue())
    print(f"({steps} steps; divide cumulative seconds by {steps} for per-step)")


# -- asgi: the app without a server ------------------------------------------------------


async def _asgi_call(app: Any, method: str, path: str, body: bytes, headers: dict[str, str]):
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": raw_path,
        "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in
                    {**headers, "content-length": str(len(body))}.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    sent = [{"type": "http.request", "body": body, "more_body": False}]
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return sent.pop() if sent else {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        out.append(msg)

    await app(scope, receive, send)
    status = out[0]["status"]
    return status, b"".join(m.get("body", b"") for m in out[1:])


async def _asgi(n: int, steps: int, repeats: int, profile: bool, top: int) -> None:
    from app.core.config import Settings
    from app.engine import Engine
    from app.main import create_app

    inside = [0.0]  # seconds spent in Engine.step: what remains is the API layer's
    engine_step = Engine.step

    async def timed_step(self: Engine, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await engine_step(self, *args, **kw)
        finally:
            inside[0] += time.perf_counter() - t0

    Engine.step = timed_step  # type: ignore[method-assign]
    app = create_app(Settings(auth="off"))
    _, binary, _ = make_bodies(n)
    async with app.router.lifespan_context(app):
        status, data = await _asgi_call(
            app, "POST", "/v1/sessions", _create_body(n),
            {"content-type": "application/x-safetensors"},
        )  # fmt: skip
        assert status == 201, data
        path = f"/v1/sessions/{orjson.loads(data)['id']}/step"
        for _ in range(200):  # warm-up
            status, data = await _asgi_call(app, "POST", path, binary, BIN_HEADERS)
            assert status == 200, data
        prof = cProfile.Profile() if profile else None
        runs = []  # (total, inside the engine) per repeat; the least disturbed one counts
        for _ in range(1 if profile else repeats):
            inside[0] = 0.0
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            for _ in range(steps):
                await _asgi_call(app, "POST", path, binary, BIN_HEADERS)
            if prof:
                prof.disable()
            runs.append((time.perf_counter() - t0, inside[0]))
    dt, engine_s = min(runs)
    outside = sorted(1e6 * (t - e) / steps for t, e in runs)
    print(
        f"asgi: {1e6 * dt / steps:.1f} us per step, of which {1e6 * engine_s / steps:.1f} in "
        f"Engine.step and {1e6 * (dt - engine_s) / steps:.1f} outside (best of {len(runs)} x "
        f"{steps} steps; outside per repeat: {', '.join(f'{x:.1f}' for x in outside)})"
    )
    if prof:
        _print_stats(prof, steps, top)


# -- serve: uvicorn in a thread under cProfile --------------------------------------------


def _serve(n: int, steps: int, top: int) -> None:
    import uvicorn

    from app.core.config import Settings
    from app.main import create_app

    port = h.free_port()
    config = uvicorn.Config(
        create_app(Settings(auth="off")), host=h.HOST, port=port, log_level="warning",
        access_log=False, loop="uvloop", http="httptools",
    )  # fmt: skip
    server = uvicorn.Server(config)
    prof = cProfile.Profile()
    started = threading.Event()
    profiling = threading.Event()

    def run() -> None:
        async def main() -> None:
            task = asyncio.ensure_future(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            started.set()
            await asyncio.to_thread(profiling.wait)
            prof.enable()  # cProfile follows the thread that enables it: the server's
            await task
            prof.disable()

        import uvloop

        uvloop.run(main())

    th = threading.Thread(target=run, daemon=True)
    th.start()
    if not started.wait(30):
        raise RuntimeError("the in-process server did not start")
    _, binary, _ = make_bodies(n)
    conn = h.Http(port)
    status, _, data = conn.request(
        "POST", "/v1/sessions", _create_body(n), {"content-type": "application/x-safetensors"}
    )
    path = f"/v1/sessions/{orjson.loads(data)['id']}/step"
    for _ in range(200):
        conn.request("POST", path, binary, BIN_HEADERS)
    profiling.set()
    time.sleep(0.05)
    t0 = time.perf_counter()
    for _ in range(steps):
        status, _, data = conn.request("POST", path, binary, BIN_HEADERS)
        assert status == 200, data
    dt = time.perf_counter() - t0
    server.should_exit = True
    th.join(10)
    print(f"serve (client in the same process): {1e3 * dt / steps:.3f} ms per step")
    _print_stats(prof, steps, top)


# -- ab: source trees as separate `optd serve` processes -----------------------------------


def _start(tree: str) -> h.Proc:
    """`optd serve` importing `app` from `tree`: PYTHONPATH starts with `tree`, and `-P` keeps
    the cwd (this checkout, which has its own app/) off the import path; checked at start."""
    port = h.free_port()
    boot = (
        f"import sys, app; assert app.__file__.startswith({tree!r}), app.__file__; "
        "from app.cli import main; sys.exit(main())"
    )
    argv = [sys.executable, "-P", "-c", boot, "serve", "--host", h.HOST, "--port", str(port),
            "--log-level", "warning"]  # fmt: skip
    env = h.base_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    return h.Proc(f"ab-{Path(tree).name}", argv, env, port)


def _ab(n: int, trees: list[tuple[str, str]], rounds: int, steps: int, echo: bool) -> None:
    procs = {name: _start(str(Path(path).resolve())) for name, path in trees}
    if echo:  # the bare FastAPI echo of bench/common/floors.py: the floor for this harness
        procs["echo"] = h.start_floor("ab-echo", None)
    try:
        for p in procs.values():
            h.wait_http(p)
        _, binary, _ = make_bodies(n)
        conns, paths = {}, {}
        for name, p in procs.items():
            conns[name] = c = h.Http(p.port)
            if name == "echo":
                paths[name] = "/echo"
                continue
            _, _, data = c.request(
                "POST", "/v1/sessions", _create_body(n),
                {"content-type": "application/x-safetensors"},
            )  # fmt: skip
            paths[name] = f"/v1/sessions/{orjson.loads(data)['id']}/step"
        for name, c in conns.items():
            for _ in range(300):
                c.request("POST", paths[name], binary, BIN_HEADERS)
        means: dict[str, list[float]] = {name: [] for name in procs}
        cpu: dict[str, float] = dict.fromkeys(procs, 0.0)
        names = list(procs)
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                c, path = conns[name], paths[name]
                c.fresh()
                c0 = h.cpu_seconds(procs[name].proc.pid)
                t0 = time.perf_counter()
                for _ in range(steps):
                    status, _, data = c.request("POST", path, binary, BIN_HEADERS)
                    if status != 200:
                        raise RuntimeError(f"{name}: {status} {data[:200]!r}")
                means[name].append((time.perf_counter() - t0) / steps)
                cpu[name] += h.cpu_seconds(procs[name].proc.pid) - c0
        for name in names:
            xs = means[name]
            print(
                f"{name:>8}: {1e3 * statistics.median(xs):.3f} ms/step median of {rounds} "
                f"rounds (min {1e3 * min(xs):.3f}, max {1e3 * max(xs):.3f}); "
                f"{1 / statistics.median(xs):.0f} steps/s; server CPU "
                f"{1e3 * cpu[name] / (rounds * steps):.3f} ms/step"
            )
    finally:
        for p in procs.values():
            p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["asgi", "serve", "ab"])
    ap.add_argument("--n", type=int, default=1000, help="parameters (float32)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--profile", action="store_true", help="asgi: under cProfile")
    ap.add_argument("--repeats", type=int, default=7, help="asgi: repeats, best one counts")
    ap.add_argument("--top", type=int, default=45, help="profile rows to print")
    ap.add_argument("--tree", action="append", default=[], help="ab: name=path (repeat)")
    ap.add_argument("--rounds", type=int, default=10, help="ab: rounds of --steps each")
    ap.add_argument("--echo", action="store_true", help="ab: add the bare FastAPI echo floor")
    args = ap.parse_args()
    if args.mode == "asgi":
        asyncio.run(_asgi(args.n, args.steps, args.repeats, args.profile, args.top))
    elif args.mode == "serve":
        _serve(args.n, args.steps, args.top)
    else:
        trees = [tuple(t.split("=", 1)) for t in args.tree] or [("cwd", str(h.ROOT))]
        _ab(args.n, trees, args.rounds, args.steps, args.echo)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
