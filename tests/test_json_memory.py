"""What a large JSON step costs a real `optd serve` in memory (issue #16 item 1).

A 248 MiB JSON step used to take the server from 74 MiB to 4.3 GiB: orjson made a Python
float of every number (and its parser a document tree of ~16x the text first). The bound
here is on the kernel's peak RSS of the server process (VmHWM), so it counts everything:
reading the body, parsing, the step, the answer. A memory bound, not a timing.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import orjson
from safetensors.numpy import save as st_save

from tests.procs import start, stop

MiB = 2**20
ROWS, COLS = 4000, 1000  # 4e6 float32 parameters: ~42 MiB of JSON gradients


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024  # kB
    return out


def test_json_step_peak_memory_and_limit() -> None:
    proc, url = start({}, "--max-json-mb", "48")
    try:
        params = {"w": np.zeros((ROWS, COLS), dtype=np.float32)}
        created = st_save(params, metadata={"config": json.dumps({"optimizer": "adam"})})
        g = np.random.default_rng(0).standard_normal(ROWS * COLS).astype(np.float32)
        tensor = {"shape": [ROWS, COLS], "dtype": "float32", "data": g}
        body = orjson.dumps({"grads": {"w": tensor}}, option=orjson.OPT_SERIALIZE_NUMPY)
        assert 36 * MiB < len(body) < 48 * MiB
        with httpx.Client(base_url=url, timeout=300) as http:
            r = http.post(
                "/v1/sessions",
                content=created,
                headers={"content-type": "application/x-safetensors"},
            )
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            before = _status(proc.pid)
            r = http.post(
                f"/v1/sessions/{sid}/step",
                content=body,
                headers={"content-type": "application/json", "prefer": "return=minimal"},
            )
            after = _status(proc.pid)
            assert r.status_code == 204, r.text
            assert r.headers["optd-version"] == "1"
            # peak over the step, against what was resident before it (the state itself,
            # 48 MB, was resident already); it was 7.8x before the fix, 2.9x after
            growth = after["VmHWM"] - before["VmRSS"]
            assert growth <= 4 * len(body), (growth / MiB, len(body) / MiB)

            # above OPTD_MAX_JSON_MB: 413 problem+json that says to use safetensors
            big = body[:-3] + b"," + b"0.5," * (3 * MiB) + b"0.5]}}"
            r = http.post(
                f"/v1/sessions/{sid}/step",
                content=big,
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 413, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["type"] == "urn:optd:problem:too-large"
            assert "OPTD_MAX_JSON_MB (48 MiB)" in problem["detail"]
            assert "safetensors" in problem["detail"]
            assert http.get(f"/v1/sessions/{sid}").json()["version"] == 1
    finally:
        stop(proc)
