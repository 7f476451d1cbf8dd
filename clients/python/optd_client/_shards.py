"""Sharded sessions (DESIGN §3 "Sharded sessions"), client side, without I/O: the layout
of a session's shards as its info lists it, splitting gradients into the shards' parts
and assembling whole tensors from the parts the shards answer.

A shard holds contiguous ranges of the session's flat layout; in the shard session each
piece of a tensor is a 1-D tensor under the tensor's own name, covering the elements
[start, stop) of the tensor flattened row-major.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optd_client._wire import Array
from optd_client.errors import InvalidTensorError
from optd_client.types import StepInfo


@dataclass(frozen=True)
class Piece:
    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class Shard:
    id: str
    index: int
    pieces: tuple[Piece, ...]


@dataclass(frozen=True)
class Layout:
    """The shards of a session (in shard order) and the full shapes of its tensors."""

    shards: tuple[Shard, ...]
    shapes: dict[str, tuple[int, ...]]


@dataclass
class Commit:
    """One shard's commit of a step, re-sent as it is (body and Idempotency-Key) until
    answered; `part` is the shard's prepare body, to prepare again when the token died."""

    index: int
    part: bytes
    token: str
    key: str


@dataclass
class Pending:
    """A step whose commits are not all answered yet (DESIGN §3: the SDK finishes its own
    half-applied step when retried): its version, global `sumsq`, loss/worker fields,
    the commits still to do (shard 0 first when among them) and the parts answered."""

    version: int
    sumsq: list[Any]
    extra: dict[str, Any]
    commits: list[Commit]
    params_dtype: str
    parts: dict[int, dict[str, Array]] = field(default_factory=dict)
    first: StepInfo | None = None
    fingerprint: bytes = b""
    tokens: list[str] = field(default_factory=list)  # every shard's, for shard 0's commit


def layout_of(info: Mapping[str, Any]) -> Layout | None:
    """The layout a session info lists, or None for an unsharded session."""
    raw = info.get("shards")
    if not isinstance(raw, list) or not raw:
        return None
    params = info.get("params")
    if not isinstance(params, Mapping):
        raise ValueError("malformed session info: shards without params")
    shapes = {str(n): tuple(int(d) for d in p["shape"]) for n, p in params.items()}
    shards = []
    for item in sorted(raw, key=lambda sh: int(sh["index"])):
        pieces = tuple(
            Piece(str(t["name"]), int(t["start"]), int(t["stop"])) for t in item["tensors"]
        )
        for p in pieces:
            if p.name not in shapes or not 0 <= p.start <= p.stop <= _size(shapes[p.name]):
                raise ValueError(f"malformed session info: shard piece {p} out of range")
        shards.append(Shard(str(item["id"]), int(item["index"]), pieces))
    return Layout(tuple(shards), shapes)


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def split(layout: Layout, grads: Mapping[str, Array]) -> list[dict[str, Array]]:
    """Every shard's part of `grads` (a subset of the session's tensors is fine): the
    pieces of each tensor, flattened row-major, as 1-D arrays (views where possible).

    A name the session does not hold or a shape other than the session's raises
    `InvalidTensorError` here (as the server would), since no shard sees the whole."""
    flat: dict[str, Array] = {}
    for name, arr in grads.items():
        shape = layout.shapes.get(name)
        if shape is None:
            raise InvalidTensorError(f"grads[{name!r}]: the session has no parameter {name!r}")
        if tuple(arr.shape) != shape:
            raise InvalidTensorError(
                f"grads[{name!r}]: shape {list(arr.shape)} does not match the parameter's "
                f"{list(shape)}"
            )
        flat[name] = np.ascontiguousarray(arr).reshape(-1)
    return [
        {p.name: flat[p.name][p.start : p.stop] for p in shard.pieces if p.name in flat}
        for shard in layout.shards
    ]


def assemble(layout: Layout, parts: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
    """Whole tensors, in the session's order, from the shards' parts (one per shard, in
    shard order). A tensor some shard's part lacks is left out."""
    pieces: dict[str, list[tuple[Piece, Array]]] = {}
    for shard, part in zip(layout.shards, parts, strict=True):
        for p in shard.pieces:
            if p.name in part:
                pieces.setdefault(p.name, []).append((p, part[p.name]))
    out: dict[str, Array] = {}
    for name, shape in layout.shapes.items():
        have = pieces.get(name)
        if not have or sum(p.stop - p.start for p, _ in have) != _size(shape):
            continue
        flat = np.empty(_size(shape), dtype=have[0][1].dtype)
        for p, arr in have:
            values = np.asarray(arr).reshape(-1)
            if values.size != p.stop - p.start:
                raise ValueError(
                    f"malformed response: a piece of {name!r} has {values.size} values, "
                    f"not {p.stop - p.start}"
                )
            flat[p.start : p.stop] = values
        out[name] = flat.reshape(shape)
    return out


def digest(grads: Mapping[str, Array]) -> bytes:
    """A fingerprint of a step's gradients (names, dtypes, shapes and values), to tell a
    retried step from a new one."""
    h = hashlib.sha256()  # OpenSSL's uses the CPU's SHA instructions: ~3x blake2b
    for name in sorted(grads):
        arr = np.ascontiguousarray(grads[name])
        h.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.digest()
