"""The Ray actor parameter server bench/peers/run.py compares optd with.

The classic Ray example's shape: one actor holds a model's parameters and Adam's m and v as
float32 numpy arrays in its process memory, and a worker calls
`ray.get(ps.step.remote(grads))` with a dict of numpy gradients and gets the new parameters
back. Nothing is durable: the state is gone when the actor's process dies. The arithmetic is
bench/common/np_adam.py's, the same function the naive JSON server and the numpy floor run.

Ray is an optional benchmark dependency (`pip install ray`), never a runtime one: this module
imports without it, and `available()` says whether the Ray cells can run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any

import numpy as np

from bench.common.np_adam import adam_step


class ParameterServer:
    """The actor: one model's state. `step` returns the parameters; Ray copies them into its
    object store on return, so the caller never sees a half-updated array."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        # Arguments from the object store are read-only views: own a copy.
        self.params = {k: np.array(p, dtype=np.float32) for k, p in params.items()}
        self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: np.zeros_like(p) for k, p in self.params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.t += 1
        for k, g in grads.items():
            adam_step(self.params[k], g, self.m[k], self.v[k], self.t)
        return self.params

    def pid(self) -> int:
        return os.getpid()


def available() -> bool:
    return importlib.util.find_spec("ray") is not None


def version() -> str:
    import ray

    return str(ray.__version__)


def start(num_cpus: int, object_store_bytes: int = 2 * 1024**3) -> None:
    """A private local Ray instance: the machine's cores, no dashboard, loopback only, no
    usage reporting, worker output not copied to ours.

    Ray turns `_node_ip_address="127.0.0.1"` into the machine's external address and its gRPC
    servers listen on every interface; `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (Ray's switch for
    "a single machine, no multi-node cluster") makes the node address, and so every listener of
    GCS, raylet and the workers, loopback. Checked after start-up."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=object_store_bytes,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":
        ray.shutdown()
        raise RuntimeError(f"Ray's node address is {node_ip}, not loopback: not benchmarking")


def stop() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def actor_class() -> Any:
    """`ray.remote(ParameterServer)`, pickled by value (with the Adam function), so Ray's
    worker processes need not find the `bench` package on their import path."""
    import ray
    from ray import cloudpickle

    for name in ("bench.common.np_adam", __name__):
        cloudpickle.register_pickle_by_value(sys.modules[name])
    return ray.remote(ParameterServer)
