"""The sharded-step protocol of DESIGN §3 spoken with plain HTTP calls (no SDK): what a
client in any language does. Tests drive it phase by phase to stop it halfway."""

from __future__ import annotations

from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

ST = "application/x-safetensors"


def parts(info: dict[str, Any], grads: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each shard's part: the slices of the flattened gradients its ranges name."""
    out = []
    for s in info["shards"]:
        part = {}
        for t in s["tensors"]:
            if t["name"] in grads:
                flat = np.ascontiguousarray(grads[t["name"]]).reshape(-1)
                part[t["name"]] = np.ascontiguousarray(flat[t["start"] : t["stop"]])
        out.append(part)
    return out


def prepare(client: Any, info: dict[str, Any], grads: dict[str, np.ndarray]) -> list[Any]:
    """Phase 1 on every shard that has a part; the answers (JSON) in shard order."""
    answers = []
    for s, part in zip(info["shards"], parts(info, grads), strict=True):
        if not part:  # no gradient for this shard: it is prepared (and committed) empty
            answers.append(client.post(f"/v1/sessions/{s['id']}/prepare", json={"grads": {}}))
            continue
        r = client.post(
            f"/v1/sessions/{s['id']}/prepare", content=st_save(part), headers={"content-type": ST}
        )
        answers.append(r)
    return answers


def commit(
    client: Any, shard: dict[str, Any], token: str, sumsq: list[Any], version: int, **kw: Any
) -> Any:
    headers = {"if-match": f'"{version}"', "accept": ST}
    if "key" in kw:
        headers["idempotency-key"] = kw.pop("key")
    body = {"prepared": token, "sumsq": sumsq, **kw}
    return client.post(f"/v1/sessions/{shard['id']}/step", json=body, headers=headers)


def step(
    client: Any, info: dict[str, Any], grads: dict[str, np.ndarray], **kw: Any
) -> tuple[int, dict[str, np.ndarray]]:
    """One whole sharded step: prepare all, commit shard 0 first, then the rest; the new
    version and the assembled parameters of the stepped tensors' shards."""
    answers = prepare(client, info, grads)
    got = []
    for r in answers:
        if r is not None:
            assert r.status_code == 200, r.text
            got.append(r.json())
        else:
            got.append(None)
    live = [(s, a) for s, a in zip(info["shards"], got, strict=True) if a is not None]
    versions = {a["version"] for _, a in live}
    assert len(versions) == 1, versions
    version = versions.pop()
    sumsq = [x for _, a in live for x in a["sumsq"]]
    pieces: dict[str, list[tuple[int, np.ndarray]]] = {}
    for s, a in live:
        r = commit(client, s, a["prepared"], sumsq, version, **kw)
        assert r.status_code == 200, r.text
        assert int(r.headers["optd-version"]) == version + 1
        part = st_load(r.content)
        for t in s["tensors"]:
            pieces.setdefault(t["name"], []).append((t["start"], part[t["name"]]))
    out = {}
    for name, ps in pieces.items():
        shape = info["params"][name]["shape"]
        if sum(p.size for _, p in ps) == int(np.prod(shape)):
            out[name] = np.concatenate([p for _, p in sorted(ps, key=lambda x: x[0])]).reshape(
                shape
            )
    return version + 1, out
