"""Gradients must have their parameter's shape (issue #16 item 12): a gradient of shape
[6] for a [2, 3] parameter used to be applied because the sizes agreed; now every shape
other than the parameter's is a 422 that names the parameter and both shapes. The one
equivalence kept: a single value may be sent as [] or [1] for a [] or [1] parameter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from app.codec import safetensors
from app.optim import Layout, assemble_grads
from app.optim.step import contiguous_grads
from app.problems import InvalidTensor
from tests.fixtures_api import assert_problem, create

F32 = np.dtype(np.float32)
SHAPES: dict[str, tuple[int, ...]] = {"w": (2, 3), "s": (), "one": (1,)}


def layout() -> Layout:
    return Layout.build(SHAPES, lambda name: 0)


def grads(**shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {n: np.ones(shapes.get(n, s), dtype=np.float32) for n, s in SHAPES.items()}


@pytest.mark.parametrize("shape", [(6,), (3, 2), (1, 6), (6, 1), (2, 3, 1), (1, 2, 3)])
def test_same_size_other_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidTensor) as info:
        assemble_grads(layout(), grads(w=shape), F32)
    assert info.value.detail == (
        f"grads: 'w' has shape {list(shape)}, the parameter has [2, 3]; "
        "send each gradient in its parameter's shape"
    )
    assert info.value.extra["errors"] == [{"loc": "grads.w", "msg": "shape mismatch"}]


@pytest.mark.parametrize(("name", "shape"), [("s", ()), ("s", (1,)), ("one", ()), ("one", (1,))])
def test_one_value_may_be_a_scalar_or_a_one_element_vector(
    name: str, shape: tuple[int, ...]
) -> None:
    flat, stepped = assemble_grads(layout(), grads(**{name: shape}), F32)
    assert flat.tolist() == [1.0] * 8 and stepped.tolist() == [0, 1, 2]


@pytest.mark.parametrize(("name", "shape"), [("s", (1, 1)), ("one", (1, 1)), ("s", (0,))])
def test_a_scalar_is_not_any_shape_with_one_value(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidTensor, match="the parameter has"):
        assemble_grads(layout(), grads(**{name: shape}), F32)


def test_the_zero_copy_path_checks_shapes_too() -> None:
    """A safetensors body in the session's order is used in place; a flat `w` in it used
    to be taken as it lay. Now it goes to the copying path, which refuses it."""
    body = safetensors.decode(safetensors.encode(grads(w=(6,))))[0]
    assert contiguous_grads(layout(), body, F32) is None
    ok = safetensors.decode(safetensors.encode(grads(s=(1,))))[0]
    assert contiguous_grads(layout(), ok, F32) is not None


def _shapes(client: Any, sid: str) -> tuple[int, dict[str, Any]]:
    info = client.get(f"/v1/sessions/{sid}").json()
    return info["version"], info["params"]


@pytest.mark.parametrize("store_kind", ["memory"])
def test_http_refuses_flat_gradients_for_shaped_params(client: Any) -> None:
    sid = create(client, {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3)})
    flat = [0.5] * 6
    bodies: list[dict[str, Any]] = [
        {"json": {"grads": {"w": flat}}},
        {"json": {"grads": {"w": {"shape": [6], "dtype": "float32", "data": flat}}}},
        {"json": {"grads": {"w": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]}}},
        {
            "content": st_save({"w": np.full(6, 0.5, np.float32), "b": np.zeros(3, np.float32)}),
            "headers": {"content-type": "application/x-safetensors"},
        },
    ]
    for kw in bodies:
        r = client.post(f"/v1/sessions/{sid}/step", **kw)
        problem = assert_problem(r, 422, "invalid-tensor")
        assert "'w'" in problem["detail"] and "the parameter has [2, 3]" in problem["detail"]
    assert _shapes(client, sid)[0] == 0  # nothing applied
    shaped = [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    r = client.post(f"/v1/sessions/{sid}/step", json={"grads": {"w": shaped, "b": [1, 2, 3]}})
    assert r.status_code == 200, r.text
    assert r.json()["params"]["w"]["shape"] == [2, 3]
