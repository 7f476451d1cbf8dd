"""A session's history (issue #19): one small JSON point per committed step or round,
kept by version in two capped sets, for the dashboard and `GET .../history`.

- `recent`: the last `cap` points, every version (full resolution).
- `tail`: points whose version is a multiple of `stride`, at most `cap` of them. When it
  overflows, the stride doubles and the points that are no longer multiples go, so the
  tail always spans the whole run at an even spacing (a 1M-step run keeps every 128th
  point, ~7,800 of them) and an append costs O(1) amortised.

The history also keeps the bytes its points hold (a point in both sets counts twice) and
how much of that its tenant was charged: `add` returns the growth of the charge, in
whole blocks, for the engine to add to the tenant's usage (DESIGN §8). The charge only
grows (a high-water mark): what the tail's thinning frees is given back when the session
goes.

A read returns, oldest first, the tail's points older than the recent window and then the
recent points, all with a version above `since`: paging with `since` = the last version
seen walks the whole run. The store never parses a point (the engine owns its format).
This module is the memory store's implementation; the Redis store does the same in
`lua/history_add.lua` and `lua/history_read.lua`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

DEFAULT_CAP = 10_000


def _version(p: tuple[int, bytes]) -> int:
    return p[0]


def _insert(points: list[tuple[int, bytes]], version: int, point: bytes) -> bool:
    """Insert unless this exact point is there (a sorted set's ZADD); True when added."""
    i = bisect.bisect_left(points, version, key=_version)
    while i < len(points) and points[i][0] == version:
        if points[i][1] == point:
            return False
        i += 1
    points.insert(i, (version, point))
    return True


@dataclass
class HistoryPage:
    points: list[bytes]  # oldest first
    stride: int  # the tail's spacing now
    recent_from: int | None  # the oldest version at full resolution (None: no points)


@dataclass
class History:
    recent: list[tuple[int, bytes]] = field(default_factory=list)  # sorted by version
    tail: list[tuple[int, bytes]] = field(default_factory=list)
    stride: int = 1
    nbytes: int = 0  # held by the points, each copy
    charged: int = 0  # to the tenant, in whole blocks; never below nbytes

    def add(self, version: int, point: bytes, cap: int, block: int) -> int:
        """Keep the point; returns the bytes to charge the tenant now (often 0)."""
        if _insert(self.recent, version, point):
            self.nbytes += len(point)
        if len(self.recent) > cap:
            self.nbytes -= sum(len(p[1]) for p in self.recent[: len(self.recent) - cap])
            del self.recent[: len(self.recent) - cap]
        if version % self.stride == 0:
            if _insert(self.tail, version, point):
                self.nbytes += len(point)
            if len(self.tail) > cap:
                self.stride *= 2
                kept = [p for p in self.tail if p[0] % self.stride == 0]
                self.nbytes -= sum(len(p[1]) for p in self.tail) - sum(len(p[1]) for p in kept)
                self.tail = kept
        due = 0
        if self.nbytes > self.charged:
            due = -(-(self.nbytes - self.charged) // block) * block
            self.charged += due
        return due

    def read(self, since: int, limit: int) -> HistoryPage:
        start = self.recent[0][0] if self.recent else None
        out: list[bytes] = []
        if start is not None:
            i = bisect.bisect_right(self.tail, since, key=_version)
            while i < len(self.tail) and self.tail[i][0] < start and len(out) < limit:
                out.append(self.tail[i][1])
                i += 1
        i = bisect.bisect_right(self.recent, since, key=_version)
        while i < len(self.recent) and len(out) < limit:
            out.append(self.recent[i][1])
            i += 1
        return HistoryPage(out, self.stride, start)
