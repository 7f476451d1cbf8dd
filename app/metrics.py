"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PHASES = ("decode", "load", "compute", "commit", "encode")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.steps = Counter("optd_steps", "Steps applied", registry=r)
        self.phase_seconds = Histogram(
            "optd_step_phase_seconds",
            "Time per step phase",
            ["phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "optd_step_seconds",
            "Whole step requests that applied a step, decode to encode (the /ui latency)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_in = Counter("optd_bytes_in", "Request body bytes", registry=r)
        self.bytes_out = Counter(
            "optd_bytes_out", "Response body bytes (tensor bodies)", registry=r
        )
        self.conflicts = Counter(
            "optd_commit_conflicts", "Commits lost to another writer", registry=r
        )
        self.stale = Counter("optd_stale_refusals", "Steps refused as too stale", registry=r)
        self.staleness = Histogram(
            "optd_staleness",
            "Versions between base_version and the session",
            registry=r,
            buckets=(0, 1, 2, 4, 8, 16, 32, 64),
        )
        self.sessions_created = Counter("optd_sessions_created", "Sessions created", registry=r)
        self.sessions_deleted = Counter("optd_sessions_deleted", "Sessions deleted", registry=r)
        self.owner_redirects = Counter(
            "optd_owner_redirects", "Requests answered 307 to the session's owner", registry=r
        )
        self.owner_proxied = Counter(
            "optd_owner_proxied", "Requests forwarded to the session's owner", registry=r
        )
        self.info = Gauge("optd_store_redis", "1 if the store is Redis, 0 if embedded", registry=r)
        # phase -> its labelled child: labels() resolves it under a lock on every call.
        # Filled on first use, so a phase shows in /metrics only once observed, as before.
        self._phases: dict[str, Histogram] = {}

    def phase(self, name: str, seconds: float) -> None:
        child = self._phases.get(name)
        if child is None:
            child = self._phases[name] = self.phase_seconds.labels(name)
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
