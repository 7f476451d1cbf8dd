"""DiLoCo over optd sync sessions against a real server: the wrapper equals a hand-written
reference loop (torch, float64) round for round; late joiners; Streaming DiLoCo fragments;
compressed pseudo-gradients (int8 with error feedback, bfloat16 parameters back)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import numpy as np
import pytest
import torch

from optd_client import Client, _compress
from optd_client.torch import DiLoCo

H, ROUNDS, LR, MOMENTUM = 3, 4, 0.7, 0.9


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)
    ).double()


def batch(worker: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * worker + t)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    return x, x.sum(dim=1, keepdim=True).sin()


def inner_step(model: torch.nn.Module, opt: torch.optim.Optimizer, worker: int, t: int) -> None:
    x, y = batch(worker, t)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def reference(workers: int, rounds: int, sync_every: int = H) -> list[dict[str, torch.Tensor]]:
    """DiLoCo by hand: inner AdamW per worker, mean pseudo-gradient, torch SGD Nesterov."""
    glob = make_model()
    outer = torch.optim.SGD(glob.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
    models = [make_model() for _ in range(workers)]
    inners = [torch.optim.AdamW(m.parameters(), lr=0.01) for m in models]
    out, t = [], 0
    for _ in range(rounds):
        for _ in range(sync_every):
            t += 1
            for w in range(workers):
                inner_step(models[w], inners[w], w, t)
        with torch.no_grad():
            for name, p in glob.named_parameters():
                deltas = [p - dict(m.named_parameters())[name] for m in models]
                p.grad = sum(deltas[1:], deltas[0]) / workers  # worker-id order, as optd
        outer.step()
        with torch.no_grad():
            for m in models:
                for p, q in zip(m.parameters(), glob.parameters(), strict=True):
                    p.copy_(q)
        out.append({n: p.detach().clone() for n, p in glob.named_parameters()})
    return out


def run_worker(
    url: str, session: str, w: int, workers: int, log: list[Any], model: torch.nn.Module
) -> None:
    inner = torch.optim.AdamW(model.parameters(), lr=0.01)
    with (
        Client(url) as client,
        DiLoCo(
            model,
            inner,
            client,
            sync_every=H,
            session=session,
            worker=f"w{w}",
            workers=workers,
        ) as diloco,
    ):
        for t in range(1, ROUNDS * H + 1):
            inner_step(model, inner, w, t)
            if diloco.step():
                log.append({n: p.detach().clone() for n, p in model.named_parameters()})


def test_diloco_equals_the_reference_loop(server_url: str) -> None:
    session = f"diloco-{uuid.uuid4().hex}"
    logs: list[list[Any]] = [[], []]
    threads = [
        # models built here: torch's global RNG is not per thread
        threading.Thread(target=run_worker, args=(server_url, session, w, 2, logs[w], m))
        for w, m in enumerate([make_model(), make_model()])
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    want = reference(2, ROUNDS)
    for log in logs:
        assert len(log) == ROUNDS
        for got, ref in zip(log, want, strict=True):
            for name in ref:
                torch.testing.assert_close(got[name], ref[name], rtol=1e-12, atol=1e-14)


def test_late_joiner_starts_from_the_global_params(server_url: str) -> None:
    session = f"diloco-{uuid.uuid4().hex}"
    elastic = {"min_workers": 1, "worker_lease_s": 30.0}
    early = make_model()
    inner = torch.optim.AdamW(early.parameters(), lr=0.01)
    with Client(server_url) as client:
        a = DiLoCo(
            early, inner, client, sync_every=H, session=session, worker="a", workers=2, **elastic
        )
        for t in range(1, 2 * H + 1):  # two rounds alone: only live member
            inner_step(early, inner, 0, t)
            a.step()
        assert a.rounds == 2
        late = make_model(seed=99)  # other init: the session's params win
        b_inner = torch.optim.AdamW(late.parameters(), lr=0.01)
        b = DiLoCo(
            late, b_inner, client, sync_every=H, session=session, worker="b", workers=2, **elastic
        )
        assert b.sessions[0].id == a.sessions[0].id
        for p, q in zip(early.parameters(), late.parameters(), strict=True):
            assert torch.equal(p, q)
        start = {n: p.detach().clone() for n, p in early.named_parameters()}
        done = threading.Event()

        def run_b() -> None:
            for t in range(1, H + 1):
                inner_step(late, b_inner, 1, 100 + t)
                b.step()
            done.set()

        th = threading.Thread(target=run_b)
        th.start()
        for t in range(2 * H + 1, 3 * H + 1):
            inner_step(early, inner, 0, t)
            a.step()
        th.join(timeout=60)
        assert done.is_set() and b.rounds == 1
        roster = a.sessions[0].workers()
        assert {w["worker"]: w["rounds"] for w in roster["workers"]} == {"a": 3, "b": 1}
        for p, q in zip(early.parameters(), late.parameters(), strict=True):
            assert torch.equal(p, q)  # both got the round's result
        assert not torch.equal(next(early.parameters()), start["0.weight"])
        a.close()
        b.close()


def test_fragments_sync_at_staggered_steps(server_url: str) -> None:
    model = make_model()
    inner = torch.optim.AdamW(model.parameters(), lr=0.01)
    session = f"diloco-{uuid.uuid4().hex}"
    with DiLoCo(model, inner, server_url, sync_every=4, fragments=2, session=session) as d:
        assert len(d.sessions) == 2 and d.groups == [["0.weight", "0.bias"], ["2.weight", "2.bias"]]
        synced = {}
        ref = make_model()
        ref_inner = torch.optim.AdamW(ref.parameters(), lr=0.01)
        glob = {n: p.detach().clone() for n, p in ref.named_parameters()}
        bufs: dict[str, torch.Tensor] = {}
        for t in range(1, 9):
            inner_step(model, inner, 0, t)
            synced[t] = d.step()
            inner_step(ref, ref_inner, 0, t)
            for f in synced[t]:  # one worker: the outer step on the plain pseudo-gradient
                for n in d.groups[f]:
                    p = dict(ref.named_parameters())[n]
                    g = glob[n] - p.detach()
                    buf = bufs[n] = g if n not in bufs else MOMENTUM * bufs[n] + g
                    glob[n] = glob[n] - LR * (g + MOMENTUM * buf)
                    with torch.no_grad():
                        p.copy_(glob[n])
        assert synced == {1: [], 2: [1], 3: [], 4: [0], 5: [], 6: [1], 7: [], 8: [0]}
        for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=n)


def test_int8_error_feedback_and_bfloat16_params(server_url: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(40, 10)  # float32
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    session = f"diloco-{uuid.uuid4().hex}"
    with DiLoCo(
        model, inner, server_url, sync_every=2, session=session, wire_dtype="int8",
        error_feedback=True, block=64, momentum=0.0, nesterov=False, outer_lr=1.0,
    ) as d:  # fmt: skip
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        x = torch.randn(16, 40)
        for _ in range(2):
            inner.zero_grad()
            model(x).square().mean().backward()
            inner.step()
            local = {n: p.detach().clone() for n, p in model.named_parameters()}
            d.step()
        sent = d.bytes_sent
        for n, p in model.named_parameters():
            delta = (start[n] - local[n]).numpy()
            q, scale = _compress.int8_block(delta, 64)
            applied = _compress.dequantize(q, scale, 64)
            want = _compress.bfloat16_round(start[n].numpy() - applied)  # lr 1, no momentum
            assert np.array_equal(p.detach().numpy(), want), n
            np.testing.assert_array_equal(d._residual[n], delta - applied)
        assert sent < 450 * 2 + 600  # 410 int8 values + scales + header, not 1640 float32 bytes


def test_bad_arguments() -> None:
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="multiple of fragments"):
        DiLoCo(model, inner, "http://127.0.0.1:9", sync_every=3, fragments=2)
    with pytest.raises(ValueError, match="wire_dtype"):
        DiLoCo(model, inner, "http://127.0.0.1:9", sync_every=3, wire_dtype="int4")  # type: ignore[arg-type]
