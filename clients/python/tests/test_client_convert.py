"""optd checkpoint <-> torch state_dict: lossless both ways, checked by continuing to
train on the other side (bit-identically where the same implementation continues)."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
import torch

from optd_client import Checkpoint, Client
from optd_client.torch import from_torch_state_dict, to_torch_state_dict

# every torch-equivalent optimizer of the server, with settings that make each slot appear
CASES: list[tuple[str, type[torch.optim.Optimizer], dict[str, Any]]] = [
    ("adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "amsgrad": True, "betas": (0.8, 0.95)}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("nadam", torch.optim.NAdam, {"lr": 0.01, "weight_decay": 0.1}),
    ("radam", torch.optim.RAdam, {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("adamax", torch.optim.Adamax, {"lr": 0.01}),
    (
        "adagrad",
        torch.optim.Adagrad,
        {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
    ),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def named(dtype: torch.dtype) -> list[tuple[str, torch.nn.Parameter]]:
    g = torch.Generator().manual_seed(3)
    shapes = {"enc.weight": (3, 4), "enc.bias": (4,), "head.weight": (4, 2), "scale": ()}
    return [
        (n, torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype))) for n, s in shapes.items()
    ]


def grads(n: int, params: list[tuple[str, torch.nn.Parameter]]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    out = []
    for k in range(n):  # `head.weight` skips every other step: per-tensor step counts differ
        out.append(
            {
                name: rng.standard_normal(p.shape)
                for name, p in params
                if k % 2 or name != "head.weight"
            }
        )
    return out


def torch_steps(
    opt: torch.optim.Optimizer,
    params: list[tuple[str, torch.nn.Parameter]],
    gs: list[dict[str, np.ndarray]],
) -> None:
    for g in gs:
        for name, p in params:
            p.grad = torch.from_numpy(g[name]).to(p.dtype) if name in g else None
        opt.step()


def values(params: list[tuple[str, torch.nn.Parameter]]) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in params}


def fresh(
    dtype: torch.dtype, cls: type[torch.optim.Optimizer], hp: dict[str, Any]
) -> tuple[list[tuple[str, torch.nn.Parameter]], torch.optim.Optimizer]:
    params = named(dtype)
    return params, cls([p for _, p in params], **hp)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_torch_to_optd_and_back_is_lossless(
    server_url: str, case: Any, torch_dtype: torch.dtype
) -> None:
    name, cls, hp = case
    dtype = torch_dtype
    params, opt = fresh(dtype, cls, hp)
    gs = grads(8, params)
    torch_steps(opt, params, gs[:4])
    ckpt = from_torch_state_dict(opt.state_dict(), params)
    assert ckpt.meta["config"]["optimizer"] == name
    with Client(server_url) as client:
        session = client.session("from-torch-" + uuid.uuid4().hex)
        session.load_state(ckpt)
        back = session.state()
        # the server continues from exactly the torch state ...
        for g in gs[4:]:
            served = session.step(g)
        session.delete()
    sd = to_torch_state_dict(back, [n for n, _ in params])
    twin_params, twin = fresh(dtype, cls, hp)
    with torch.no_grad():
        for (_, p), (_, q) in zip(params, twin_params, strict=True):
            q.copy_(p)
    twin.load_state_dict(sd)
    torch_steps(opt, params, gs[4:])
    torch_steps(twin, twin_params, gs[4:])
    # ... torch continues bit-identically from the round trip ...
    a, b = values(params), values(twin_params)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    # ... and the two implementations agree to the reference tolerance
    for n, v in a.items():
        np.testing.assert_allclose(served[n], v, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_optd_to_torch_and_back_is_lossless(
    server_url: str, case: Any, torch_dtype: torch.dtype
) -> None:
    name, cls, hp = case
    dtype = torch_dtype
    params, opt = fresh(dtype, cls, hp)
    gs = grads(8, params)
    optd_dtype = str(dtype).removeprefix("torch.")
    with Client(server_url) as client:
        first = client.create_session(name, values(params), dtype=optd_dtype, **hp)
        for g in gs[:4]:
            first.step(g)
        ckpt = first.state()
        sd = to_torch_state_dict(ckpt, [n for n, _ in params])
        with torch.no_grad():
            for n, p in params:
                p.copy_(torch.from_numpy(ckpt.params[n]))
        opt.load_state_dict(sd)
        for i, (n, _) in enumerate(params):  # torch holds exactly the server's state
            for slot, t in opt.state_dict()["state"].get(i, {}).items():
                if slot == "mu_product":  # a float64 scalar, cast to the param's dtype by torch
                    want = ckpt.meta["scalars"][slot][ckpt.param_names.index(n)]
                    assert t.item() == np.array(want, dtype=ckpt.params[n].dtype)
                elif slot != "step":
                    assert np.array_equal(t.numpy(), ckpt.tensors[f"{slot}/{n}"])
        second = client.session("via-torch-" + uuid.uuid4().hex)
        second.load_state(from_torch_state_dict(opt.state_dict(), params))
        for g in gs[4:]:
            a, b = first.step(g), second.step(g)
            assert all(np.array_equal(a[n], b[n]) for n in a)
        torch_steps(opt, params, gs[4:])
        for n, v in values(params).items():
            np.testing.assert_allclose(a[n], v, rtol=TOL[dtype], atol=TOL[dtype])
        first.delete()
        second.delete()


def test_param_groups_become_optd_groups_and_back() -> None:
    params = named(torch.float64)
    p = dict(params)
    opt = torch.optim.SGD(
        [{"params": [p["enc.weight"], p["head.weight"]]},
         {"params": [p["enc.bias"], p["scale"]], "lr": 0.5, "momentum": 0.0, "weight_decay": 0.1}],
        lr=0.1, momentum=0.9,
    )  # fmt: skip
    torch_steps(opt, params, grads(3, params))
    order = ["enc.weight", "head.weight", "enc.bias", "scale"]  # torch's: group by group
    with pytest.raises(ValueError, match="param_names"):  # model order says nothing of groups
        from_torch_state_dict(opt.state_dict(), params)
    ckpt = from_torch_state_dict(opt, params)  # the optimizer itself: matched by identity
    config = ckpt.meta["config"]
    assert config["hyperparams"]["lr"] == 0.1
    assert config["groups"] == [
        {"match": ["enc.bias", "scale"], "lr": 0.5, "momentum": 0.0, "weight_decay": 0.1}
    ]
    assert [g for _, _, g in ckpt.meta["layout"]] == [0, 0, 1, 1]
    sd = to_torch_state_dict(ckpt, order)
    want = opt.state_dict()
    assert sd["param_groups"] == [
        g | {"param_names": order[2 * i : 2 * i + 2]} for i, g in enumerate(want["param_groups"])
    ]
    assert sd["state"].keys() == want["state"].keys()
    for i, entry in want["state"].items():
        assert all(torch.equal(v, sd["state"][i][k]) for k, v in entry.items())


def test_glob_characters_in_names_are_escaped() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([{"params": [w]}, {"params": [b], "lr": 0.1}])
    ckpt = from_torch_state_dict(opt, [("w*", w), ("b[0]?", b)])
    assert ckpt.meta["config"]["groups"][0]["match"] == ["b[[]0][?]"]


def test_unsupported_conversions_are_refused() -> None:
    ckpt = Checkpoint(
        {"param/w": np.zeros(1)},
        {"config": {"optimizer": "lion"}, "layout": [["w", [1], 0]], "steps": [0]},
    )
    with pytest.raises(ValueError, match="'lion' has no torch.optim class"):
        to_torch_state_dict(ckpt, ["w"])
    ckpt.meta["config"] = {"optimizer": "adam", "hyperparams": {"bias_correction": False}}
    with pytest.raises(ValueError, match="bias_correction"):
        to_torch_state_dict(ckpt, ["w"])
    ckpt.meta["config"] = {"optimizer": "adam"}
    with pytest.raises(ValueError, match="param_names"):
        to_torch_state_dict(ckpt, ["v"])
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="parameters"):
        from_torch_state_dict(opt.state_dict(), [])
    with pytest.raises(ValueError, match="optimizer="):
        from_torch_state_dict(
            {"param_groups": [{"params": [0], "lr": 1.0}], "state": {}}, [("w", torch.zeros(1))]
        )


def test_to_torch_follows_the_target_optimizers_groups(server_url: str) -> None:
    """torch loads by position: a state dict listed in the session's group order would
    swap the state (and settings) of a torch optimizer whose groups come in another order."""
    params = named(torch.float64)
    p = dict(params)
    gs = grads(8, params)
    with Client(server_url) as client:
        groups = [{"match": ["*.bias", "scale"], "weight_decay": 0.0}]
        session = client.create_session(
            "adamw", values(params), dtype="float64", lr=0.01, weight_decay=0.1, groups=groups
        )
        for g in gs[:4]:
            session.step(g)
        ckpt = session.state()
        # the no-decay group first, each listed against the model's order
        target = torch.optim.AdamW(
            [
                {"params": [(n, p[n]) for n in ("scale", "enc.bias")], "weight_decay": 0.0},
                {"params": [(n, p[n]) for n in ("head.weight", "enc.weight")]},
            ],
            lr=0.01,
            weight_decay=0.1,
        )
        with torch.no_grad():
            for n, q in params:
                q.copy_(torch.from_numpy(ckpt.params[n]))
        target.load_state_dict(to_torch_state_dict(ckpt, target))
        assert [g["weight_decay"] for g in target.param_groups] == [0.0, 0.1]
        for n, q in params:
            for slot, t in target.state[q].items():
                if slot != "step":
                    assert np.array_equal(t.numpy(), ckpt.tensors[f"{slot}/{n}"]), (slot, n)
        for g in gs[4:]:
            served = session.step(g)
        session.delete()
    torch_steps(target, params, gs[4:])
    for n, v in values(params).items():
        np.testing.assert_allclose(served[n], v, rtol=1e-10, atol=1e-10)
    by_names = to_torch_state_dict(ckpt, [n for n, _ in params])  # the session's order
    assert [g["param_names"] for g in by_names["param_groups"]] == [
        ["enc.weight", "head.weight"],
        ["enc.bias", "scale"],
    ]
    unnamed = torch.optim.AdamW([p["enc.weight"], p["enc.bias"]])
    with pytest.raises(ValueError, match="named_params="):
        to_torch_state_dict(ckpt, unnamed)
    with pytest.raises(ValueError, match=r"mixes parameters of session groups \[0, 1\]"):
        to_torch_state_dict(ckpt, unnamed, named_params=params)
    with pytest.raises(ValueError, match="stepped"):  # "scale" has state torch would lose
        to_torch_state_dict(ckpt, torch.optim.AdamW([("enc.bias", p["enc.bias"])]))
