"""The torch adapter against a real server: RemoteOptimizer versus local torch.optim."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from optd_client import Client
from optd_client.torch import RemoteOptimizer


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url) as c:
        yield c


def mlp(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return net.to(dtype)


def data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g, dtype=dtype)
    return x, torch.sin(x.sum(dim=1, keepdim=True))


def train(
    model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, sched: bool = False
) -> None:
    x, y = data(next(model.parameters()).dtype)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5) if sched else None

    def closure() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss  # type: ignore[return-value]  # a tensor, as torch users return

    for _ in range(steps):
        opt.step(closure)
        if scheduler is not None:
            scheduler.step()


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((p - q).detach().abs().max()) for p, q in pairs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_remote_adam_reproduces_local_adam(client: Client, dtype: torch.dtype) -> None:
    local, remote = mlp(dtype), mlp(dtype)
    opt = RemoteOptimizer(remote.named_parameters(), client, "adam", lr=0.01)
    train(local, torch.optim.Adam(local.parameters(), lr=0.01), 50)
    train(remote, opt, 50)
    assert max_diff(local, remote) < (1e-5 if dtype == torch.float32 else 1e-12)
    assert opt.session.last is not None and opt.session.last.step == 50
    info = opt.session.info()
    assert info["dtype"] == str(dtype).removeprefix("torch.") and info["last_loss"] is not None
    opt.session.delete()


def test_lr_changes_reach_the_server(client: Client) -> None:
    local, remote = mlp(torch.float64), mlp(torch.float64)
    opt = RemoteOptimizer(remote.named_parameters(), client, "adamw", lr=0.02, weight_decay=0.1)
    group = opt.param_groups[0]
    assert group["lr"] == 0.02 and group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0.1
    local_opt = torch.optim.AdamW(local.parameters(), lr=0.02, weight_decay=0.1)
    train(local, local_opt, 25, sched=True)  # StepLR halves lr every 10 steps
    train(remote, opt, 25, sched=True)
    assert max_diff(local, remote) < 1e-12
    assert opt.session.info()["hyperparams"]["lr"] == pytest.approx(0.005)
    opt.param_groups[0]["lr"] = 0.5
    opt.param_groups[0]["betas"] = (0.8, 0.9)
    train(remote, opt, 1)
    hyper = opt.session.info()["hyperparams"]
    assert hyper["lr"] == 0.5 and hyper["betas"] == [0.8, 0.9]
    opt.session.delete()


def test_params_without_grad_are_not_stepped(client: Client) -> None:
    local, remote = mlp(torch.float32), mlp(torch.float32)
    for model in (local, remote):
        model[0].requires_grad_(False)  # type: ignore[index]
    opt = RemoteOptimizer(remote.named_parameters(), client, "adam", lr=0.05)
    train(local, torch.optim.Adam(local.parameters(), lr=0.05), 10)
    train(remote, opt, 10)
    assert max_diff(local, remote) < 1e-5
    steps = {n: p["step"] for n, p in opt.session.info()["params"].items()}
    assert steps == {"0.weight": 0, "0.bias": 0, "2.weight": 10, "2.bias": 10}
    opt.session.delete()


def test_state_dict_moves_between_remote_and_local(client: Client) -> None:
    remote = mlp(torch.float64)
    opt = RemoteOptimizer(remote.named_parameters(), client, "adam", lr=0.01, amsgrad=True)
    train(remote, opt, 5)
    sd = opt.state_dict()
    assert sd["optd"]["session"] == opt.session.id and sd["state"][0]["step"] == 5
    # ... into a local torch Adam: it continues like the server does
    local = copy.deepcopy(remote)
    local_opt = torch.optim.Adam(local.parameters(), lr=0.01, amsgrad=True)
    local_opt.load_state_dict(copy.deepcopy(sd))  # torch adopts the tensors, then mutates them
    train(local, local_opt, 5)
    # ... into a second RemoteOptimizer: bit-identical continuation
    twin = copy.deepcopy(remote)
    twin_opt = RemoteOptimizer(twin.named_parameters(), client, "adam")
    twin_opt.load_state_dict(sd)
    assert twin_opt.param_groups[0]["amsgrad"] is True
    train(remote, opt, 5)
    train(twin, twin_opt, 5)
    assert max_diff(remote, twin) == 0.0
    assert max_diff(remote, local) < 1e-12
    # ... and a plain torch state dict back into the remote session
    opt.load_state_dict(local_opt.state_dict())
    remote.load_state_dict(local.state_dict())
    train(local, local_opt, 5)
    train(remote, opt, 5)
    assert max_diff(remote, local) < 1e-12
    for o in (opt, twin_opt):
        o.session.delete()


def test_join_existing_session(client: Client) -> None:
    first = mlp(torch.float32)
    opt = RemoteOptimizer(first.named_parameters(), client, "sgd", lr=0.1, momentum=0.9)
    train(first, opt, 3)
    second = mlp(torch.float32)  # the initial weights, then the session's
    joined = RemoteOptimizer(second.named_parameters(), client, session_id=opt.session.id)
    assert max_diff(first, second) == 0.0 and joined.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="one param group"):
        joined.add_param_group({"params": [torch.zeros(1)]})
    with pytest.raises(TypeError, match="named_parameters"):
        RemoteOptimizer(second.parameters(), client)  # type: ignore[arg-type]
    opt.session.delete()
