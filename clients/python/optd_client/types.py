"""Plain result types shared by the sync and async clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PARAM_SLOT = "param"


@dataclass(frozen=True)
class StepInfo:
    """What the server said about the last step, besides the parameters.

    After a sync-mode step that had to wait on its barrier (202), `barrier` holds the
    barrier status the server reported and `step`, `lr`, `grad_norm` are unknown (None):
    the parameters were picked up with a long-poll on `GET .../params`.
    """

    version: int
    step: int | None
    lr: float | None
    grad_norm: float | None
    staleness: int | None
    replayed: bool = False
    barrier: dict[str, Any] | None = None


@dataclass
class Checkpoint:
    """A full optd checkpoint: tensors named `<slot>/<param name>` plus the meta document.

    `meta` is the server's session document (config, layout, per-tensor step counts,
    scalar state); hand the whole object back to `load_state()` to restore it.
    """

    tensors: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]
    version: int | None = None

    @property
    def slots(self) -> list[str]:
        """Slot names in first-seen order, `param` included."""
        seen: dict[str, None] = {}
        for key in self.tensors:
            seen.setdefault(key.split("/", 1)[0], None)
        return list(seen)

    def slot(self, slot: str) -> dict[str, npt.NDArray[Any]]:
        """`{param name: array}` of one slot (`param`, `exp_avg`, ...)."""
        prefix = slot + "/"
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    @property
    def params(self) -> dict[str, npt.NDArray[Any]]:
        return self.slot(PARAM_SLOT)

    @property
    def param_names(self) -> list[str]:
        """Parameter names in the session's layout order."""
        layout = self.meta.get("layout") or []
        return [str(item[0]) for item in layout]

    @property
    def steps(self) -> dict[str, int]:
        """Per-parameter step counts from the meta document."""
        counts = self.meta.get("steps") or []
        return {n: int(s) for n, s in zip(self.param_names, counts, strict=False)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return (
            self.meta == other.meta
            and self.tensors.keys() == other.tensors.keys()
            and all(
                a.dtype == other.tensors[k].dtype and np.array_equal(a, other.tensors[k])
                for k, a in self.tensors.items()
            )
        )
