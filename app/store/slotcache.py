"""Slot arrays as Redis bytes, and the process-local cache of session states.

Slots travel as flat little-endian bytes so any process on any machine reads them back
bit for bit. The cache holds the arrays of the last version this process committed or
loaded per session; it is only ever used after the load script confirmed that version
(and the session's incarnation) is still current, so it can never serve stale state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.problems import NotFound
from app.store import keys


@dataclass
class Entry:
    version: int
    inc: str
    arrays: dict[str, np.ndarray]  # read-only; callers get copies
    logged: bool = False  # the session had a step log at this version
    meta: bytes | None = None  # set when `arrays` is the whole state at `version`

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


class SlotCache:
    """LRU of session states bounded by bytes; 0 bytes disables it."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._d: OrderedDict[str, Entry] = OrderedDict()

    def get(self, sid: str) -> Entry | None:
        ent = self._d.get(sid)
        if ent is not None:
            self._d.move_to_end(sid)
        return ent

    def pop(self, sid: str) -> None:
        ent = self._d.pop(sid, None)
        if ent is not None:
            self.size -= ent.nbytes

    def put(self, sid: str, ent: Entry) -> None:
        old = self._d.get(sid)
        if old is not None and old.inc == ent.inc and old.version > ent.version:
            return  # a concurrent call of ours already cached something newer
        self.pop(sid)
        if ent.nbytes > self.limit:
            return
        self._d[sid], self.size = ent, self.size + ent.nbytes
        while self.size > self.limit:
            self.pop(next(iter(self._d)))


def encode(arr: np.ndarray) -> tuple[np.ndarray, str, memoryview]:
    """A read-only flat little-endian view (a copy only if needed) and its byte view."""
    a = np.ravel(arr)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"unsupported slot dtype {a.dtype}")
    le = a.dtype.newbyteorder("<")
    a = np.ascontiguousarray(a.astype(le, copy=False))
    a.setflags(write=False)
    return a, le.str, a.data.cast("B")


def pack(
    sid: str, slots: Mapping[str, np.ndarray], token: str, chunk_bytes: int
) -> tuple[dict[str, np.ndarray], dict[str, list[Any]], dict[str, memoryview]]:
    """Owned arrays, their layout entries (see `keys`), and the chunks to SET by key."""
    owned: dict[str, np.ndarray] = {}
    layout: dict[str, list[Any]] = {}
    chunks: dict[str, memoryview] = {}
    for name, arr in slots.items():
        a, dtype, raw = encode(arr)
        starts = range(0, len(raw), chunk_bytes)
        owned[keys.check_slot(name)] = a
        layout[name] = [dtype, a.size, len(starts), token, a.nbytes]
        for c, i in enumerate(starts):
            chunks[keys.chunk_key(sid, name, token, c)] = raw[i : i + chunk_bytes]
    return owned, layout, chunks


def decode(parts: Sequence[bytes], dtype: str, length: int) -> np.ndarray:
    """A read-only array over the chunks (zero copy for one chunk, one copy for several)."""
    if sum(len(p) for p in parts) != length * np.dtype(dtype).itemsize:
        raise NotFound(f"a stored slot does not hold {length} elements of {dtype}")
    if len(parts) == 1:
        out = np.frombuffer(parts[0], dtype=dtype)  # zero copy, read-only
    else:
        out = np.empty(length, dtype=dtype)
        buf, pos = out.view(np.uint8), 0
        for p in parts:
            buf[pos : pos + len(p)] = np.frombuffer(p, dtype=np.uint8)
            pos += len(p)
        out.setflags(write=False)
    return out


def fresh(a: np.ndarray) -> np.ndarray:
    """A writeable native-endian copy: the caller owns and mutates what `load` returns."""
    return a.astype(a.dtype.newbyteorder("="), copy=True)
