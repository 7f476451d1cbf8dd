"""API keys, tenants and quotas (DESIGN §6).

Keys look like `optd_<id>_<secret>`. The keys file keeps, per key, its id, tenant, a
random salt and SHA-256(salt + key): the secret itself is never stored or logged, and a
request's key is found by its id and checked in constant time. Keys are 192-bit random
tokens, so a fast salted hash is enough (no password-style stretching needed).

File (`OPTD_API_KEYS_FILE`, JSON):
    {"tenants": {"acme": {"max_sessions": 100, "max_params": 10000000,
                          "max_state_bytes": 1000000000, "rate": 50, "burst": 100}},
     "keys": [{"id": "3f9a...", "tenant": "acme", "salt": "...", "sha256": "...",
               "admin": false}]}
`optd keys create --file F --tenant T [--admin]` adds a key and prints it once.
`OPTD_API_KEYS="tenant:key,..."` (plain keys, hashed at start) suits tests and dev.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.problems import Unauthorized

TENANT_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_RE = re.compile(r"optd_([0-9a-f]{16})_([A-Za-z0-9_-]{16,})")
TENANT_LABEL = "optd/tenant"  # reserved label: the owning tenant, used to filter lists


class Limits(BaseModel):
    """Per-tenant quotas; None = unlimited."""

    model_config = ConfigDict(extra="forbid")

    max_sessions: int | None = Field(None, ge=0)
    max_params: int | None = Field(None, ge=0, description="elements per session")
    max_state_bytes: int | None = Field(None, ge=0, description="all sessions together")
    rate: float | None = Field(None, gt=0, description="requests per second")
    burst: float | None = Field(None, gt=0, description="bucket size (default 2 x rate)")


@dataclass(frozen=True)
class Caller:
    tenant: str | None  # None: auth is off (everything is visible)
    admin: bool = False
    limits: Limits = field(default_factory=Limits)

    def may_see(self, owner: str | None) -> bool:
        return self.tenant is None or self.admin or owner == self.tenant


ANONYMOUS = Caller(None, admin=True)


@dataclass(frozen=True)
class KeyEntry:
    id: str
    tenant: str
    salt: bytes
    digest: bytes
    admin: bool


def digest(salt: bytes, key: str) -> bytes:
    return hashlib.sha256(salt + key.encode()).digest()


def new_key() -> tuple[str, str]:
    """(key id, the full key)."""
    kid = secrets.token_hex(8)
    return kid, f"optd_{kid}_{secrets.token_urlsafe(24)}"


def entry_for(tenant: str, key: str, admin: bool = False) -> dict[str, Any]:
    m = KEY_RE.fullmatch(key)
    kid = m.group(1) if m else hashlib.sha256(key.encode()).hexdigest()[:16]
    salt = secrets.token_bytes(16)
    return {
        "id": kid,
        "tenant": tenant,
        "salt": salt.hex(),
        "sha256": digest(salt, key).hex(),
        "admin": admin,
    }


class KeyRing:
    """The configured keys and tenants; `authenticate` maps a bearer token to a Caller."""

    def __init__(self, keys: list[KeyEntry], tenants: dict[str, Limits]) -> None:
        self.keys = {k.id: k for k in keys}
        self.tenants = tenants

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, path: str | None, inline: str | None) -> KeyRing:
        doc: dict[str, Any] = {"keys": [], "tenants": {}}
        if path:
            try:
                doc = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read OPTD_API_KEYS_FILE {path}: {exc}") from None
        raw = list(doc.get("keys", []))
        for item in (inline or "").split(","):
            if item.strip():
                tenant, sep, key = item.strip().partition(":")
                if not sep or not key:
                    raise ValueError("OPTD_API_KEYS takes tenant:key pairs, comma-separated")
                raw.append(entry_for(tenant, key))
        keys = []
        for k in raw:
            if not TENANT_RE.fullmatch(str(k.get("tenant", ""))):
                raise ValueError(f"invalid tenant name {k.get('tenant')!r} in the API keys")
            keys.append(
                KeyEntry(
                    str(k["id"]),
                    str(k["tenant"]),
                    bytes.fromhex(k["salt"]),
                    bytes.fromhex(k["sha256"]),
                    bool(k.get("admin", False)),
                )
            )
        tenants = {t: Limits.model_validate(v) for t, v in doc.get("tenants", {}).items()}
        return cls(keys, tenants)

    def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send your API key as `Authorization: Bearer <key>`")
        token = token.strip()
        m = KEY_RE.fullmatch(token)
        kid = m.group(1) if m else hashlib.sha256(token.encode()).hexdigest()[:16]
        entry = self.keys.get(kid)
        if entry is None or not hmac.compare_digest(entry.digest, digest(entry.salt, token)):
            raise Unauthorized("unknown API key; ask your optd administrator for one")
        return Caller(entry.tenant, entry.admin, self.tenants.get(entry.tenant, Limits()))


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_enabled(mode: str, host: str, ring: KeyRing) -> bool:
    """`auto`: on when keys are configured or the server binds a non-loopback address."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return len(ring) > 0 or not is_loopback(host)
