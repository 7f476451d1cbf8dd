"""Generate the torch reference trajectories in testdata/torch/.

Run with the pinned torch (CPU): `python testdata/gen_torch_vectors.py`.

The server's optimizer math must match torch.optim (DESIGN.md §2) without torch being installed
where the tests run, so the trajectories are recorded once, here, with the pinned CPU build, and
replayed by tests/test_optim_torch.py (and by any SDK that wants them).

Output, all JSON (floats are written with repr, so every value round-trips exactly):

- ``inputs.json``: the seed, the initial params (float64) and 200 steps of gradients (float64),
  so no test has to re-derive them from an RNG. A float32 run casts both to float32 (round to
  nearest) before use. A case may scale the gradient of step i (1-based) by ``grad_scale[i-1]``
  (in float64, before any cast) and may skip a parameter (grad None) on the steps listed in
  ``skip``.
- ``defaults.json``: every optimizer's keyword defaults read from the installed torch with
  ``inspect.signature``, plus the constructed optimizer's ``defaults`` (which adds AdamW's
  decoupled_weight_decay=True); implementation switches like foreach/fused left out, tuples
  as lists.
- ``<optimizer>.json``: the cases. Each has the hyperparameters in torch's names, optional
  ``groups`` / ``schedule`` / ``max_grad_norm`` in optd's create-session form (and the torch
  construction it stands for), a float64 run (params every 10 steps, final slots named by
  torch's state keys, per-param step counts, scalar state such as NAdam's mu_product) and a
  float32 run (final params after 200 steps). Schedule cases also record the lr used at each
  step; the clipping case the total grad norm before clipping.

torch runs with ``foreach=False`` (the single-tensor reference path), one thread, and with the
default dtype set to the run's dtype so scalar state (step, mu_product) has that dtype too.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

TORCH_VERSION = "2.13.0"
SEED = 20240611
SHAPES: dict[str, tuple[int, ...]] = {"w": (4, 3), "b": (3,), "s": ()}
GRAD_SCALE = {"w": 1.0, "b": 0.1, "s": 3.0}  # different magnitudes per tensor
STEPS64, EVERY64, STEPS32 = 60, 10, 200
OUT = Path(__file__).resolve().parent / "torch"

CLASSES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}
SCALAR_STATE = {"mu_product"}  # per-parameter scalars, not slots shaped like the param
SWITCHES = {"self", "params", "foreach", "fused", "capturable", "differentiable"}

# Every third step (1, 4, 7, ...) "b" has no gradient, so its step count lags the others.
SUBSET = {"skip": {"b": [i for i in range(1, STEPS32 + 1) if i % 3 == 1]}}
# "b" in its own group (lr 0.1, no decay); the others use the case's hyperparameters.
GROUPS = {"groups": [{"match": ["b"], "lr": 0.1, "weight_decay": 0.0}]}
# Large gradients (norm ~40, clipped to 0.5) except every fourth step (norm ~0.2, untouched).
CLIP = {
    "max_grad_norm": 0.5,
    "grad_scale": [0.05 if i % 4 == 0 else 10.0 for i in range(1, STEPS32 + 1)],
}
COSINE = {"name": "cosine", "total_steps": 40, "min_lr_ratio": 0.1}


def c(id_: str, extra: dict[str, Any] | None = None, **hp: Any) -> dict[str, Any]:
    return {"id": id_, "hyperparams": hp, **(extra or {})}


WD = {"weight_decay": 0.1}
DWD = {"weight_decay": 0.1, "decoupled_weight_decay": True}
CASES: dict[str, list[dict[str, Any]]] = {
    "sgd": [
        c("default"),
        c("plain", lr=0.05),
        c("momentum", lr=0.02, momentum=0.9),
        c("momentum_dampening", lr=0.02, momentum=0.9, dampening=0.3),
        c("nesterov", lr=0.02, momentum=0.8, nesterov=True),
        c("weight_decay", lr=0.05, **WD),
        c("momentum_wd", lr=0.02, momentum=0.9, **WD),
        c("maximize", lr=0.02, momentum=0.9, maximize=True),
        c("subset_momentum", SUBSET, lr=0.02, momentum=0.9),
        c("groups", GROUPS, lr=0.02, momentum=0.9, weight_decay=0.01),
    ],
    "adam": [
        c("default"),
        c("amsgrad", lr=0.01, amsgrad=True),
        c("weight_decay_l2", lr=0.01, **WD),
        c("decoupled_weight_decay", lr=0.01, **DWD),
        c("maximize", lr=0.01, maximize=True),
        c("betas_eps", lr=0.02, betas=[0.8, 0.95], eps=1e-3),
        c("amsgrad_wd_maximize", lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True),
        c("subset", SUBSET, lr=0.01),
        c("groups", GROUPS, lr=0.01, weight_decay=0.01),
        c("clip", CLIP, lr=0.01),
        c("schedule_step", {"schedule": {"name": "step", "step_size": 7, "gamma": 0.5}}, lr=0.02),
        c("schedule_exponential", {"schedule": {"name": "exponential", "gamma": 0.97}}, lr=0.02),
        # torch's CosineAnnealingLR is periodic past T_max while optd's cosine stays at the
        # floor, so the run stops at T_max (the lr of the last step is the floor in both).
        c("schedule_cosine", {"schedule": COSINE, "steps": 41}, lr=0.02),
    ],
    "adamw": [
        c("default"),
        c("weight_decay", lr=0.01, **WD),
        c("amsgrad", lr=0.01, amsgrad=True),
        c("maximize", lr=0.01, maximize=True),
    ],
    "nadam": [
        c("default"),
        c("weight_decay", lr=0.01, **WD),
        c("decoupled_weight_decay", lr=0.01, **DWD),
        c("momentum_decay", lr=0.01, momentum_decay=0.05),
        c("maximize", lr=0.01, maximize=True),
        c("subset", SUBSET, lr=0.01),
    ],
    "radam": [
        # betas (0.9, 0.999): rho_t = 4.996 at step 5 and 5.994 at step 6, so the first five
        # steps take the un-rectified branch and the rest the rectified one.
        c("default"),
        c("lr", lr=0.01),
        c("weight_decay", lr=0.01, **WD),
        c("decoupled_weight_decay", lr=0.01, **DWD),
        c("betas_eps", lr=0.01, betas=[0.8, 0.99], eps=1e-4),
        c("maximize", lr=0.01, maximize=True),
    ],
    "adamax": [
        c("default"),
        c("weight_decay", lr=0.01, **WD),
        c("betas_eps", lr=0.01, betas=[0.8, 0.99], eps=1e-3),
        c("maximize", lr=0.01, maximize=True),
    ],
    "adagrad": [
        c("default"),
        c("lr_decay", lr=0.05, lr_decay=0.02),
        c("initial_accumulator", initial_accumulator_value=0.5),
        c("weight_decay", lr=0.05, **WD),
        c("eps", lr=0.05, eps=1e-3),
        c("maximize", lr=0.05, maximize=True),
    ],
    "rmsprop": [
        c("default"),
        c("centered", lr=0.005, centered=True),
        c("momentum", lr=0.005, momentum=0.9),
        c("centered_momentum", lr=0.005, centered=True, momentum=0.8),
        c("weight_decay", lr=0.005, **WD),
        c("alpha_eps", lr=0.005, alpha=0.9, eps=1e-4),
        c("maximize", lr=0.005, momentum=0.5, maximize=True),
    ],
}


def make_inputs() -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    params0 = {n: rng.standard_normal(shape) for n, shape in SHAPES.items()}
    grads = []
    for i in range(1, STEPS32 + 1):
        g = {n: GRAD_SCALE[n] * rng.standard_normal(shape) for n, shape in SHAPES.items()}
        if i % 5 == 0:
            g["w"][0, 0] = 0.0  # exact zeros exercise eps paths (Adamax's |g| + eps, v == 0)
        grads.append(g)
    return {"params": params0, "grads": grads}


def torch_defaults() -> dict[str, dict[str, Any]]:
    """Keyword defaults of each __init__, plus what the constructor passes on to its base
    (AdamW is Adam with decoupled_weight_decay=True, visible only in `optimizer.defaults`)."""
    out: dict[str, dict[str, Any]] = {}
    probe = [torch.nn.Parameter(torch.zeros(1))]
    for name, cls in CLASSES.items():
        sig = inspect.signature(cls.__init__)
        found = {k: p.default for k, p in sig.parameters.items() if k not in SWITCHES}
        built = {k: v for k, v in cls(probe).defaults.items() if k not in SWITCHES}
        assert all(built[k] == v for k, v in found.items()), name
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in (built | found).items()}
    return out


def flat(t: torch.Tensor | np.ndarray) -> list[float]:
    arr = t.detach().numpy() if isinstance(t, torch.Tensor) else t
    return [float(x) for x in np.asarray(arr).ravel()]


def make_scheduler(opt: torch.optim.Optimizer, spec: dict[str, Any], lr: float) -> Any:
    sched = torch.optim.lr_scheduler
    if spec["name"] == "step":
        return sched.StepLR(opt, step_size=spec["step_size"], gamma=spec["gamma"])
    if spec["name"] == "exponential":
        return sched.ExponentialLR(opt, gamma=spec["gamma"])
    if spec["name"] == "cosine":
        eta_min = spec["min_lr_ratio"] * lr
        return sched.CosineAnnealingLR(opt, T_max=spec["total_steps"], eta_min=eta_min)
    raise ValueError(spec["name"])


def param_groups(params: dict[str, torch.Tensor], specs: list[dict[str, Any]]) -> list[Any]:
    """optd's `groups` as torch param_groups: first matching glob wins, the rest go last."""
    groups: list[dict[str, Any]] = [
        {"params": [], **{k: v for k, v in g.items() if k != "match"}} for g in specs
    ]
    rest = []
    for n, p in params.items():
        hits = [
            i for i, g in enumerate(specs) if any(fnmatch.fnmatchcase(n, m) for m in g["match"])
        ]
        (groups[hits[0]]["params"] if hits else rest).append(p)
    return [*groups, {"params": rest}] if groups else rest


def run(opt_name: str, case: dict[str, Any], inputs: dict[str, Any], dtype: str) -> dict[str, Any]:
    tdtype, ndtype = (
        (torch.float64, np.float64) if dtype == "float64" else (torch.float32, np.float32)
    )
    steps = case.get("steps") or (STEPS64 if dtype == "float64" else STEPS32)
    kwargs = {k: tuple(v) if k == "betas" else v for k, v in case["hyperparams"].items()}
    torch.set_default_dtype(tdtype)
    try:
        params = {
            n: torch.nn.Parameter(torch.from_numpy(np.array(v, dtype=ndtype)))
            for n, v in inputs["params"].items()
        }
        torch_groups = param_groups(params, case.get("groups", []))
        opt = CLASSES[opt_name](torch_groups, **kwargs, foreach=False)
        lr0 = opt.param_groups[-1]["lr"]
        sched = make_scheduler(opt, case["schedule"], lr0) if "schedule" in case else None
        skip = {n: set(v) for n, v in case.get("skip", {}).items()}
        scale = case.get("grad_scale")
        counts = dict.fromkeys(params, 0)
        checkpoints: dict[str, Any] = {}
        lrs: list[float] = []
        norms: list[float] = []
        for i in range(1, steps + 1):
            for n, p in params.items():
                if i in skip.get(n, ()):
                    p.grad = None
                    continue
                g = inputs["grads"][i - 1][n]
                if scale is not None:
                    g = g * scale[i - 1]
                p.grad = torch.from_numpy(np.array(g, dtype=ndtype))
                counts[n] += 1
            if "max_grad_norm" in case:
                total = torch.nn.utils.clip_grad_norm_(list(params.values()), case["max_grad_norm"])
                norms.append(float(total))
            lrs.append(float(opt.param_groups[-1]["lr"]))
            opt.step()
            if sched is not None:
                sched.step()
            if dtype == "float64" and (i % EVERY64 == 0 or i == steps):
                checkpoints[str(i)] = {n: flat(p) for n, p in params.items()}
        result: dict[str, Any] = {"steps": steps}
        if dtype == "float32":
            result["params"] = {n: flat(p) for n, p in params.items()}
            return result
        slots: dict[str, dict[str, list[float]]] = {n: {} for n in params}
        scalars: dict[str, dict[str, float]] = {n: {} for n in params}
        for n, p in params.items():
            for key, val in opt.state[p].items():
                if key == "step":
                    assert int(val) == counts[n], (n, val, counts[n])
                elif key in SCALAR_STATE:
                    scalars[n][key] = float(val)
                elif val is not None:
                    assert val.shape == p.shape, (key, val.shape)
                    slots[n][key] = flat(val)
        result.update(checkpoints=checkpoints, slots=slots, param_steps=counts)
        if any(scalars.values()):
            result["scalar_state"] = scalars
        if sched is not None:
            result["lrs"] = lrs
        if norms:
            result["grad_norms"] = norms
        return result
    finally:
        torch.set_default_dtype(torch.float32)


def write(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")


def main() -> None:
    version = torch.__version__.split("+")[0]
    if version != TORCH_VERSION:
        sys.exit(f"need torch {TORCH_VERSION} (CPU), found {torch.__version__}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs()
    write(
        OUT / "inputs.json",
        {
            "torch_version": torch.__version__,
            "seed": SEED,
            "steps_float64": STEPS64,
            "checkpoint_every": EVERY64,
            "steps_float32": STEPS32,
            "params": {
                n: {"shape": list(v.shape), "data": flat(v)} for n, v in inputs["params"].items()
            },
            "grads": [{n: flat(v) for n, v in g.items()} for g in inputs["grads"]],
        },
    )
    write(OUT / "defaults.json", {"torch_version": torch.__version__, "defaults": torch_defaults()})
    total = 0
    for opt_name, cases in CASES.items():
        out = []
        for case in cases:
            entry = dict(case)
            entry["float64"] = run(opt_name, case, inputs, "float64")
            entry["float32"] = run(opt_name, case, inputs, "float32")
            out.append(entry)
            total += 1
            print(f"  {opt_name}/{case['id']}: ok", flush=True)
        write(
            OUT / f"{opt_name}.json",
            {"optimizer": opt_name, "torch_version": torch.__version__, "cases": out},
        )
    size = sum(f.stat().st_size for f in OUT.glob("*.json"))
    print(f"wrote {total} cases to {OUT} ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
