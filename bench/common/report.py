"""What every benchmark's report shares: bench/RESULTS.md and replacing one section of it,
the progress line per cell, number formats, and the machine line (cores, versions, others' CPU).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from bench.common import harness as h

RESULTS = h.ROOT / "bench" / "RESULTS.md"
PHASES = ("decode", "load", "compute", "commit", "encode")


class Progress:
    def __init__(self, total: int) -> None:
        self.i, self.total = 0, total

    def cell(self, msg: str) -> None:
        self.i += 1
        print(f"[{self.i}/{self.total}] {msg}", flush=True)


def fmt_n(n: int) -> str:
    e = round(math.log10(n))
    return f"1e{e}" if 10**e == n else str(n)


def fmt_bytes(b: int) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 100_000 else f"{b / 1e3:.1f} kB"


def fmt_ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_phases(phases: dict[str, float]) -> str:
    top = sorted(phases.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {fmt_ms(v)} ms" for k, v in top)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(redis: str, others: float) -> str:
    import fastapi
    import uvicorn

    py = platform.python_version()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Machine: {os.cpu_count()} cores ({_cpu_model()}, {platform.machine()}), "
        f"Python {py}, numpy {np.__version__}, redis-server {redis}, "
        f"uvicorn {uvicorn.__version__}, fastapi {fastapi.__version__}; {when}. "
        "The client and every server share these cores; processes other than the "
        f"benchmark's used {others:.2f} cores on average while it measured."
    )


def finish(text: str, section: str, started: float, write: bool) -> None:
    """The end of every benchmark's run: its section printed, the total time (`started`:
    time.monotonic() at the start), and the section written to RESULTS.md if asked."""
    print()
    print(text)
    print(f"total {time.monotonic() - started:.1f} s")
    if write:
        write_section(text, section)
        print(f"wrote {RESULTS.relative_to(h.ROOT)}")


def write_section(body: str, section: str) -> None:
    """Replace the section headed by the line `section` (up to the next `## ` heading),
    keeping every other one; a new section goes at the end."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    if section in lines:
        start = lines.index(section)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = [*body.rstrip("\n").splitlines(), ""]
    else:
        lines += ["", *body.rstrip("\n").splitlines()]
    RESULTS.write_text("\n".join(lines).rstrip("\n") + "\n")
