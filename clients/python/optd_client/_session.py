"""Session handles' shared state and the client options (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypedDict
from urllib.parse import quote

from optd_client._shards import Layout, Pending
from optd_client.types import StepInfo

Wire = Literal["safetensors", "json"]


@dataclass
class SessionState:
    """What a session object remembers between calls; flows update it."""

    id: str
    worker: str | None = None
    last: StepInfo | None = None
    version: int | None = None
    sent: int = 0
    """Bytes of step bodies this handle sent, and of step and params answers it got."""
    received: int = 0
    layout: Layout | None = None
    """The shards of a sharded session (from its info), None if unsharded or unknown."""
    pending: Pending | None = None
    """A sharded step of this handle not finished on every shard (see `_sharded`)."""


class SessionBase:
    """The attributes `Session` and `AsyncSession` share."""

    def __init__(self, sid: str, worker: str | None = None, url: str = "") -> None:
        self._s = SessionState(sid, worker)
        self._url = url

    @property
    def ui_url(self) -> str:
        """This session's live dashboard (loss, lr, grad-norm curves, workers, config)."""
        return f"{self._url}/ui/sessions/{quote(self.id, safe='')}"

    @property
    def id(self) -> str:
        return self._s.id

    @property
    def last(self) -> StepInfo | None:
        """Version, step, lr, grad_norm and staleness of this object's last step."""
        return self._s.last

    @property
    def version(self) -> int | None:
        """The session's version as of the last response this object received."""
        return self._s.version

    @property
    def bytes_sent(self) -> int:
        """Bytes of the step bodies this object sent (what a thin uplink carries)."""
        return self._s.sent

    @property
    def bytes_received(self) -> int:
        """Bytes of the step and params answers this object received."""
        return self._s.received

    @property
    def worker(self) -> str | None:
        """Default `worker` id sent with every step (sync mode needs one per worker)."""
        return self._s.worker

    @worker.setter
    def worker(self, value: str | None) -> None:
        self._s.worker = value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} version={self.version}>"


class ClientOptions(TypedDict, total=False):
    """Keyword options of `Client` and `AsyncClient` (see `Core`)."""

    api_key: str | None
    wire: Wire
    timeout: float
    retries: int
    backoff: float
    max_backoff: float
    barrier_timeout: float
    poll_wait: float
    headers: Mapping[str, str] | None
