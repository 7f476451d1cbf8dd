"""Process facts for bench/peers/run.py from Linux /proc: memory (VmRSS, VmHWM and its
reset) and the CPU of a whole process tree (Ray's processes come and go)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import harness as h


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A `/proc/<pid>/status` size field in kB (VmRSS now, VmHWM the high-water mark)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5): the peak from here on."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat from the 3rd (state) on; [] if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def descendants(root: int) -> list[int]:
    """Every live process below `root` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and everything below it, including children that have exited
    (they are in their parent's cutime/cstime once reaped): Ray's workers come and go."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [root, *descendants(root)]:
        fields = _stat(pid)
        if fields:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


class Noise(h.Interference):
    """harness.Interference counting this whole process tree as ours."""

    @staticmethod
    def _ours() -> float:
        return tree_cpu(os.getpid())
