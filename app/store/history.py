"""A session's history (issue #19): one small JSON point per committed step or round,
kept by version in two capped sets, for the dashboard and `GET .../history`.

- `recent`: the last `cap` points, every version (full resolution).
- `tail`: points whose version is a multiple of `stride`, at most `cap` of them. When it
  overflows, the stride doubles and the points that are no longer multiples go, so the
  tail always spans the whole run at an even spacing (a 1M-step run keeps every 128th
  point, ~7,800 of them) and an append costs O(1) amortised.

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

    def add(self, version: int, point: bytes, cap: int) -> None:
        bisect.insort(self.recent, (version, point), key=_version)
        if len(self.recent) > cap:
            del self.recent[: len(self.recent) - cap]
        if version % self.stride == 0:
            bisect.insort(self.tail, (version, point), key=_version)
            if len(self.tail) > cap:
                self.stride *= 2
                self.tail = [p for p in self.tail if p[0] % self.stride == 0]

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
