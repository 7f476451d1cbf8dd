"""Zero-copy gradient assembly: a safetensors body in the session's order is used as one
flat array (and is what the gradient log keeps); anything else takes the copying path."""

from __future__ import annotations

import numpy as np

from app.codec import safetensors
from app.optim import Layout, assemble_grads
from app.optim.step import contiguous_grads

F32 = np.dtype(np.float32)


def layout() -> Layout:
    return Layout.build({"w": (3, 4), "b": (4,), "s": ()}, lambda name: 0)


def body(
    order: list[str], dtype: str = "float32", shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = shapes or {"w": (3, 4), "b": (4,), "s": ()}
    raw = {k: rng.standard_normal(shapes[k]).astype(dtype) for k in order}
    return safetensors.decode(safetensors.encode(raw))[0]


def test_in_order_body_is_one_view_equal_to_the_assembled_copy() -> None:
    grads = body(["w", "b", "s"])
    view = contiguous_grads(layout(), grads, F32)
    assert view is not None and not view.flags.writeable and view.size == 17
    flat, _ = assemble_grads(layout(), grads, F32)
    assert view.tobytes() == flat.tobytes()
    assert np.shares_memory(view, grads["w"])  # no copy


def test_other_bodies_take_the_copying_path() -> None:
    lay = layout()
    assert contiguous_grads(lay, body(["b", "w", "s"]), F32) is None  # order
    assert contiguous_grads(lay, body(["w", "b"]), F32) is None  # partial
    assert contiguous_grads(lay, body(["w", "b", "s"], "float64"), F32) is None  # dtype
    reshaped = body(["w", "b", "s"], shapes={"w": (4, 3), "b": (4,), "s": ()})
    assert contiguous_grads(lay, reshaped, F32) is None  # same size, other shape: a 422
    flat_w = body(["w", "b", "s"], shapes={"w": (12,), "b": (4,), "s": ()})
    assert contiguous_grads(lay, flat_w, F32) is None  # flat with the size: a 422 too
    owned = {k: np.array(v) for k, v in body(["w", "b", "s"]).items()}
    assert contiguous_grads(lay, owned, F32) is None  # separate arrays
