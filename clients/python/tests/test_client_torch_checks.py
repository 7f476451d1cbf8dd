"""What RemoteOptimizer refuses instead of silently changing the numbers (issue #20 items
2 and 3): complex and non-float parameters, a float32/float64 mix without `dtype=`, and
optimizer state loaded into an optimizer of another kind; and what its state dict does
for every optimizer the server has, including the two without a torch class."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch_cases import OPTIMIZERS, TRAINED, Named, assert_close, grads, model, torch_steps, values

from optd_client import Client
from optd_client.torch import RemoteOptimizer, from_torch_state_dict

# (optimizer, hyperparameters, the second group's overrides); the last three have no
# torch layout: no torch class, or a setting torch cannot express
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    **{name: (name, hp, over) for name, (_, hp, over) in OPTIMIZERS.items()},
    "adabelief": ("adabelief", {"lr": 0.01}, {"weight_decay": 0.1}),
    "lion": ("lion", {"lr": 0.01}, {"weight_decay": 0.1}),
    "adam_no_bias_correction": ("adam", {"lr": 0.01, "bias_correction": False}, {"lr": 0.03}),
}


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url) as c:
        yield c


def test_complex_and_integer_parameters_are_refused(client: Client) -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    z = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="'z' is torch.complex64"):
        RemoteOptimizer([("w", w), ("z", z)], client)
    count = torch.nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)
    with pytest.raises(TypeError, match="'count' is torch.int64"):
        RemoteOptimizer([("w", w), ("count", count)], client)
    with pytest.raises(TypeError, match="'z' is torch.complex64"):
        from_torch_state_dict(torch.optim.Adam([w, z]), [("w", w), ("z", z)])


def test_mixed_float32_float64_needs_an_explicit_dtype(client: Client) -> None:
    fine = 1.0 + 2.0**-40  # float32 rounds it to 1.0
    single = torch.nn.Parameter(torch.full((2,), 0.5))
    double = torch.nn.Parameter(torch.full((3,), fine, dtype=torch.float64))
    named = [("single", single), ("double", double)]
    with pytest.raises(ValueError, match=r"mix torch\.float64 \('double'\).*dtype='float64'"):
        RemoteOptimizer(named, client, "adam")
    with pytest.raises(ValueError, match="dtype="):
        from_torch_state_dict(torch.optim.Adam([single, double]), named)
    local = copy.deepcopy(double)
    local_opt = torch.optim.Adam([local], lr=0.01)
    opt = RemoteOptimizer(named, client, "adam", lr=0.01, dtype="float64")
    assert opt.session.info()["dtype"] == "float64"
    assert opt.session.params()["double"][0] == fine  # not rounded on the way in
    for k in range(5):
        g = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64) * (k + 1)
        single.grad, double.grad, local.grad = torch.ones(2), g.clone(), g.clone()
        opt.step()
        local_opt.step()
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    torch.testing.assert_close(double, local, rtol=1e-12, atol=1e-12)
    opt.session.delete()


def _torch_twin(sd: dict[str, Any], params: Named, cls: type[torch.optim.Optimizer]) -> Any:
    """A torch optimizer built with the state dict's own groups, over `params`."""
    p = dict(params)
    groups = [
        {k: v for k, v in g.items() if k not in ("params", "param_names")}
        | {"params": [(n, p[n]) for n in g["param_names"]]}
        for g in sd["param_groups"]
    ]
    return cls(groups)


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_moves_by_name_and_refuses_other_optimizers(client: Client, case: str) -> None:
    name, hp, over = CASES[case]
    params = model(torch.float64)
    groups = [{"match": ["d", "e", "b"], **over}]
    opt = RemoteOptimizer(params, client, name, groups=groups, **hp)
    gs = grads(10, params)
    torch_steps(opt, params, gs[:5])
    sd = opt.state_dict()
    # into a RemoteOptimizer whose model lists its parameters in another order
    twin = copy.deepcopy(params)
    twin_opt = RemoteOptimizer(twin[::-1], client, name)
    twin_opt.load_state_dict(sd)
    assert twin_opt.session.info()["groups"] == opt.session.info()["groups"]
    local = copy.deepcopy(params)
    if case in OPTIMIZERS:  # into torch.optim, which continues like the server
        local_opt = _torch_twin(sd, local, OPTIMIZERS[case][0])
        local_opt.load_state_dict(sd)
        assert {n for n, p in local if p in local_opt.state} >= set(TRAINED)
        torch_steps(local_opt, local, gs[5:])
    else:  # torch would start from empty state: it refuses (no parameters listed)
        assert "tensors" in sd["optd"]
        with pytest.raises(ValueError, match="size of optimizer's group"):
            torch.optim.Adam([p for _, p in local]).load_state_dict(sd)
    torch_steps(opt, params, gs[5:])
    torch_steps(twin_opt, twin, gs[5:])
    mine, theirs = values(params), values(twin)
    assert all(np.array_equal(mine[n], theirs[n]) for n in mine)  # bit for bit
    if case in OPTIMIZERS:
        assert_close(values(local), values(params), torch.float64)
    other = RemoteOptimizer(copy.deepcopy(params), client, "sgd" if name != "sgd" else "adam")
    with pytest.raises(ValueError, match=f"from a '{name}' session"):
        other.load_state_dict(sd)
    for o in (opt, twin_opt, other):
        o.session.delete()


def test_plain_state_dict_of_another_class_is_refused(client: Client) -> None:
    params = model(torch.float32)
    trained = [(n, p) for n, p in params if n in TRAINED]
    nadam = torch.optim.NAdam([p for _, p in trained])
    torch_steps(nadam, params, grads(2, params))
    opt = RemoteOptimizer(trained, client, "adam")
    with pytest.raises(ValueError, match=r"not a torch\.optim\.Adam state.*momentum_decay"):
        opt.load_state_dict(nadam.state_dict())
    assert opt.session.info()["step"] == 0  # nothing was loaded
    opt.session.delete()
