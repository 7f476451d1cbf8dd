"""The naive JSON parameter server: what the FastAPI tutorials write.

Run as `python -m bench.peers.naive_server --port P` (uvicorn with the same defaults as `optd serve`
and bench/common/floors.py: uvloop and httptools when installed, one process, no access log).

State (params, Adam m and v as float32 numpy arrays) lives in this process's memory and is
lost when it exits. Requests and responses are JSON with tensors as plain nested lists,
validated by a pydantic model; the handler is a plain `def` (FastAPI runs it in its thread
pool) and returns a dict (FastAPI encodes it). The Adam arithmetic is bench/common/np_adam.py's, the
same function the Ray actor parameter server runs.

- `POST /sessions` `{"params": {name: [floats]}}` -> `{"id": ...}`
- `POST /sessions/{id}/step` `{"grads": {name: [floats]}}`
  -> `{"step": t, "params": {name: [floats]}}`
- `DELETE /sessions/{id}`, `GET /healthz`
"""

from __future__ import annotations

import argparse
import itertools
import threading
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bench.common.np_adam import adam_step


class CreateIn(BaseModel):
    params: dict[str, list[float]]


class StepIn(BaseModel):
    grads: dict[str, list[float]]


@dataclass
class Session:
    params: dict[str, np.ndarray]
    m: dict[str, np.ndarray] = field(init=False)
    v: dict[str, np.ndarray] = field(init=False)
    t: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}


def create_app() -> FastAPI:
    app = FastAPI()
    sessions: dict[str, Session] = {}
    ids = itertools.count(1)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/sessions", status_code=201)
    def create(body: CreateIn) -> dict[str, str]:
        sid = f"s{next(ids)}"
        params = {k: np.asarray(p, dtype=np.float32) for k, p in body.params.items()}
        sessions[sid] = Session(params)
        return {"id": sid}

    @app.post("/sessions/{sid}/step")
    def step(sid: str, body: StepIn) -> dict[str, object]:
        s = sessions.get(sid)
        if s is None:
            raise HTTPException(404, "no such session")
        with s.lock:
            s.t += 1
            for name, g in body.grads.items():
                if name not in s.params:
                    raise HTTPException(422, f"unknown parameter {name!r}")
                grad = np.asarray(g, dtype=np.float32)
                adam_step(s.params[name], grad, s.m[name], s.v[name], s.t)
            return {"step": s.t, "params": {k: p.tolist() for k, p in s.params.items()}}

    @app.delete("/sessions/{sid}", status_code=204)
    def delete(sid: str) -> None:
        sessions.pop(sid, None)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
