"""Settings from the environment (`OPTD_*`), mirrored by `optd serve` flags."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTD_", extra="ignore")

    redis_url: str | None = Field(None, description="redis://host:port/db; unset = embedded store")
    redis_cluster: bool = Field(False, description="use redis-py's cluster client")
    redis_wait_replicas: int = Field(
        0, ge=0, description="acknowledge a step only once WAIT confirms N replicas have it"
    )
    redis_timeout_s: float = Field(
        5.0,
        gt=0,
        description="bound on every Redis call (a command's whole reply): a hung Redis is a "
        "503 with Retry-After after this, well inside a client's patience",
    )
    ready_timeout_s: float = Field(
        1.0, gt=0, description="/readyz answers 503 when the store does not answer within this"
    )
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on when keys are configured or the bind is not loopback"
    )
    api_keys_file: str | None = Field(None, description="JSON keys file (see app.core.auth)")
    api_keys: str | None = Field(None, description="tenant:key,... (plain; tests and dev)")
    metrics_auth: bool = Field(
        False, description="/metrics needs an API key (any tenant's) when auth is on"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    log_level: str = "info"
    max_body_mb: float = Field(512, gt=0, description="413 above this")
    max_json_mb: float = Field(
        64,
        gt=0,
        description="413 for JSON bodies above this (parsing JSON takes a few times the body "
        "in memory; safetensors bodies go up to max_body_mb)",
    )
    body_timeout_s: float = Field(
        15.0,
        gt=0,
        description="408 for a body not received within this many seconds, plus one second "
        "per body_min_rate_kib KiB received (slow or stalled uploads hold memory and a slot)",
    )
    body_min_rate_kib: float = Field(
        64.0, ge=0, description="KiB/s a long body must keep up on average (0: a flat timeout)"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="close idle keep-alive connections after")
    limit_concurrency: int = Field(
        0, ge=0, description="uvicorn: 503 beyond this many connections and tasks (0: no limit)"
    )
    max_header_bytes: int = Field(16 * 2**20, gt=0, description="safetensors header limit")
    max_tensors: int = Field(100_000, gt=0, description="tensors per request / session")
    max_name_bytes: int = Field(512, gt=0)
    max_wait_s: float = Field(60.0, ge=0, description="upper bound for ?wait= long-polls")
    idempotency_ttl_s: int = Field(86_400, gt=0)
    chunk_mb: int = Field(64, gt=0, lt=512, description="Redis value size per chunk")
    cache_mb: int = Field(1024, ge=0, description="per-process cache of committed state")
    log_steps: int = Field(
        8,
        ge=1,
        description="Redis: a full snapshot every N steps, the steps between kept as "
        "their gradients (1: snapshot every step)",
    )
    log_min_bytes: int = Field(
        2**20, ge=0, description="Redis: sessions with less state than this always snapshot"
    )
    malloc_trim_mb: int = Field(
        1024,
        ge=0,
        description="keep up to this much freed memory for reuse instead of page-faulting "
        "big buffers in on every step (glibc; 0 leaves the allocator alone)",
    )
    offload_elements: int = Field(
        65_536, ge=0, description="steps on larger sessions run in a thread, off the event loop"
    )
    history_points: int = Field(
        10_000,
        ge=0,
        description="history points kept per session at full resolution (and at most as "
        "many in the downsampled tail); 0 keeps no history",
    )
    events_poll_s: float = Field(
        0.25, gt=0, description="how often GET .../events looks for new history points"
    )
    owners: Literal["auto", "redirect", "proxy", "off"] = Field(
        "auto",
        description="session owners (DESIGN §4): a request for a session another live API "
        "process owns is answered 307 to it (redirect) or forwarded to it (proxy); off: "
        "every process serves every session; auto: redirect on Redis, off on the embedded store",
    )
    prepare_ttl_s: float = Field(
        120.0, gt=0, description="a sharded step's prepared part is kept this long (DESIGN §3)"
    )
    prepare_max_mb: float = Field(
        4096, gt=0, description="prepared parts kept at most (the oldest go first)"
    )
    owner_lease_s: float = Field(
        5.0, gt=0, description="a session owner's lease; renewed while the owner serves it"
    )
    advertise_url: str | None = Field(
        None,
        description="this process's URL for redirects to it (default: http://host:port it "
        "was started with, or the address a request reached it on)",
    )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)
