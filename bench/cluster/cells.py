"""The measured cells of bench/cluster/run.py (one-session latency, many-session load): the
run builds them, the report renders them; kept here so the report need not import the run
(which imports the report)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import load as ld
from bench.common import metrics as mt


@dataclass
class LatCell:
    n: int
    system: str
    lats: list[float]
    phases: dict[str, float]  # server-side mean ms per step phase

    def p(self, q: float) -> float:
        return 1000 * mt.percentile(self.lats, q)


@dataclass
class LoadCell:
    sessions: int
    n: int
    apis: int
    system: str
    load: ld.Load
