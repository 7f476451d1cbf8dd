"""Torch optimizer state into optd (issue #20): every parameter's state lands on that
parameter whatever order the param groups list them in, with frozen parameters inside
and outside the groups, for every torch-equivalent optimizer; checked by continuing to
train on the server and purely in torch. What cannot be known is refused."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch_cases import (
    OPTIMIZERS,
    TRAINED,
    assert_close,
    grads,
    model,
    shuffled_groups,
    torch_steps,
    values,
)

from optd_client import Client
from optd_client.torch import RemoteOptimizer, from_torch_state_dict


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url) as c:
        yield c


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_shuffled_groups_and_frozen_params_continue_like_torch(
    client: Client, name: str, torch_dtype: torch.dtype
) -> None:
    cls, hp, over = OPTIMIZERS[name]
    params = model(torch_dtype)
    opt = cls(shuffled_groups(params, over), **hp)
    gs = grads(12, params)
    torch_steps(opt, params, gs[:6])
    ckpt = from_torch_state_dict(opt.state_dict(), params)  # model order, "f" included
    config = ckpt.meta["config"]
    assert config["optimizer"] == name  # told apart by the state dict's keys
    assert config["groups"][0]["match"] == ["d", "e", "b"]
    assert [n for n, _, _ in ckpt.meta["layout"]] == ["c", "a", "d", "e", "b"]  # no "f"
    p = dict(params)
    for slot in {k for entry in opt.state.values() for k in entry} - {"step", "mu_product"}:
        for n in ("a", "b", "c", "d"):  # every slot is the one torch keeps for that name
            if slot in opt.state[p[n]]:
                assert np.array_equal(ckpt.tensors[f"{slot}/{n}"], opt.state[p[n]][slot].numpy())
    session = client.session("import-" + uuid.uuid4().hex)
    session.load_state(ckpt)
    for g in gs[6:]:
        served = session.step(g)
    session.delete()
    torch_steps(opt, params, gs[6:])
    assert_close(served, {n: v for n, v in values(params).items() if n != "f"}, torch_dtype)


def test_issue_20_two_adamw_groups_in_readme_pattern(client: Client) -> None:
    """The report: four equal-shape parameters, AdamW groups [a, c] and [b, d]; the moments
    of b and c were swapped and the model ended 52% off torch, without an error."""
    torch.manual_seed(0)
    local = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.randn(8)) for n in "abcd"})
    remote = copy.deepcopy(local)
    named = dict(local.named_parameters())
    torch_opt = torch.optim.AdamW(
        [
            {"params": [(n, named[n]) for n in "ac"], "weight_decay": 0.1},
            {"params": [(n, named[n]) for n in "bd"], "weight_decay": 0.0},
        ],
        lr=0.05,
    )
    x = torch.linspace(-1, 1, 8)

    def train(opt: torch.optim.Optimizer, m: torch.nn.ParameterDict, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            parts = [((k + 1) * m[n] - x.roll(k)).pow(2).sum() for k, n in enumerate("abcd")]
            torch.stack(parts).sum().backward()
            opt.step()

    train(torch_opt, local, 5)
    ckpt = from_torch_state_dict(torch_opt.state_dict(), local.named_parameters())
    assert ckpt.meta["config"]["groups"][0]["match"] == ["b", "d"]
    for n in "abcd":
        for slot in ("exp_avg", "exp_avg_sq"):
            want = torch_opt.state[named[n]][slot].numpy()
            assert np.array_equal(ckpt.tensors[f"{slot}/{n}"], want)
    remote.load_state_dict(local.state_dict())
    opt = RemoteOptimizer(remote.named_parameters(), client, "adamw", lr=0.05)
    opt.load_state_dict(torch_opt.state_dict())  # the README's RemoteOptimizer pattern
    train(torch_opt, local, 10)
    train(opt, remote, 10)
    for n in "abcd":
        torch.testing.assert_close(remote[n], local[n], rtol=1e-5, atol=1e-6)
    opt.session.delete()


def test_remote_optimizer_takes_a_torch_optimizer_without_names(client: Client) -> None:
    params = model(torch.float64)
    p = dict(params)
    unnamed = [{"params": [p["c"], p["a"]]}, {"params": [p["d"], p["e"], p["b"]], "lr": 0.03}]
    torch_opt = torch.optim.Adam(unnamed, lr=0.01)
    gs = grads(10, params)
    torch_steps(torch_opt, params, gs[:5])
    ref_params, ref_opt = copy.deepcopy((params, torch_opt))  # to continue purely in torch
    opt = RemoteOptimizer(params, client, "adam")
    with pytest.raises(ValueError, match="2 param groups and no param_names"):
        opt.load_state_dict(torch_opt.state_dict())
    opt.load_state_dict(torch_opt)  # matched by identity
    steps = {n: i["step"] for n, i in opt.session.info()["params"].items()}
    assert steps == {"a": 5, "b": 5, "c": 5, "d": 2, "e": 0, "f": 0}  # "f": kept, unstepped
    torch_steps(ref_opt, ref_params, gs[5:])
    torch_steps(opt, params, gs[5:])  # RemoteOptimizer is a torch Optimizer
    assert_close(values(params), values(ref_params), torch.float64)
    second = RemoteOptimizer(copy.deepcopy(params)[::-1], client, "adam")
    second.load_state_dict(opt)  # a RemoteOptimizer itself: its state dict, by name
    assert second.session.state().steps == opt.session.state().steps
    for o in (opt, second):
        o.session.delete()


def test_what_cannot_be_matched_is_refused() -> None:
    params = model(torch.float32)
    p = dict(params)
    one_group = torch.optim.Adam([p[n] for n in TRAINED])
    torch_steps(one_group, params, grads(1, params))
    with pytest.raises(ValueError, match="requires_grad"):  # 4 in the optimizer, 6 named
        from_torch_state_dict(one_group.state_dict(), params)
    trained = [(n, p[n]) for n in TRAINED]
    assert from_torch_state_dict(one_group.state_dict(), trained).param_names == list(TRAINED)
    with pytest.raises(ValueError, match="shape"):  # by position, and provably wrong
        from_torch_state_dict(one_group.state_dict(), [trained[i] for i in (1, 0, 2, 3)])
    named = torch.optim.Adam([{"params": [("a", p["a"]), ("x", p["b"])]}])
    with pytest.raises(ValueError, match="'x', which named_params lacks"):
        from_torch_state_dict(named.state_dict(), params)
    with pytest.raises(ValueError, match="not among named_params"):
        from_torch_state_dict(one_group, params[1:])
    with pytest.raises(ValueError, match="twice"):
        from_torch_state_dict(one_group, params + params[:1])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_is_told_from_the_state_dict(name: str) -> None:
    cls, hp, _ = OPTIMIZERS[name]
    params = model(torch.float32)
    mine = {"name": "trained", "initial_lr": 1.0}  # a user's label, an LR scheduler's key
    opt = cls([{"params": [p for n, p in params if n in TRAINED], **mine}], **hp)
    torch_steps(opt, params, grads(2, params))
    trained = [(n, p) for n, p in params if n in TRAINED]
    config = from_torch_state_dict(opt, trained).meta["config"]
    assert config["optimizer"] == name and config["hyperparams"].keys().isdisjoint(mine)
    for other in OPTIMIZERS:  # every other class refuses it (AdamW's state is Adam's too)
        if other != name and (name, other) != ("adamw", "adam"):
            with pytest.raises(ValueError, match="is not a torch.optim"):
                from_torch_state_dict(opt, trained, other)
