"""A measured cell of bench/workers/run.py: the run builds them, the report renders them;
kept here so the report need not import the run (which imports the report)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import load as ld


@dataclass
class Result:
    n: int
    mode: str
    shared: bool  # all workers on one session
    workers: int
    apis: int
    load: ld.Load
    server_steps: float
    conflicts: float
    stale_refusals: float
    staleness_sum: float
    staleness_count: float
    per_process: list[tuple[float, float]]  # (steps, conflicts) of each API process
    by_round: list[tuple[float, float]]  # (steps, conflicts) of each timed round
