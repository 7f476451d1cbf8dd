"""What the benchmarks read off a server's Prometheus /metrics (the step phase histogram,
unlabelled counters) and the percentile every latency table uses."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bench.common.harness import Http


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


_PHASE_RE = re.compile(
    r'^optd_step_phase_seconds_(sum|count)\{phase="([a-z_]+)"\}\s+([0-9.eE+-]+)$', re.M
)


def scrape_phases(port: int) -> dict[str, tuple[float, float]]:
    """{phase: (sum seconds, count)} from the server's Prometheus histogram."""
    status, _, body = Http(port, timeout=10.0).request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics on {port} answered {status}")
    out: dict[str, list[float]] = {}
    for kind, phase, value in _PHASE_RE.findall(body.decode()):
        out.setdefault(phase, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s+([0-9.eE+-]+|NaN|[+-]Inf)$", re.M)


def scrape_samples(port: int) -> dict[str, float]:
    """Every unlabelled sample of the server's /metrics (`optd_steps_total`,
    `optd_commit_conflicts_total`, `optd_staleness_sum`, ...) by name."""
    conn = Http(port, timeout=10.0)
    try:
        status, _, body = conn.request("GET", "/metrics")
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"/metrics on {port} answered {status}")
    return {name: float(value) for name, value in _SAMPLE_RE.findall(body.decode())}


def phase_means_ms(
    before: Mapping[str, tuple[float, float]], after: Mapping[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean milliseconds per observation of each phase between two scrapes."""
    out = {}
    for phase, (s1, c1) in after.items():
        s0, c0 = before.get(phase, (0.0, 0.0))
        if c1 > c0:
            out[phase] = 1000.0 * (s1 - s0) / (c1 - c0)
    return out
