"""Session ids: new ones, ones derived from an idempotency key, and the check that keeps
user text out of store keys (an id that is not well formed cannot exist: 404)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from app.problems import NotFound

SID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_sid() -> str:
    """A fresh session id: 22 URL-safe characters, 128 random bits."""
    return secrets.token_urlsafe(16)


def sid_for_key(idempotency_key: str, scope: str = "") -> str:
    """The id a create with this Idempotency-Key gets, so a retry finds the same session.
    `scope` (the tenant) keeps one tenant's keys from naming another tenant's ids."""
    raw = b"create:" + idempotency_key.encode("utf-8", "surrogatepass")
    if scope:
        # length-prefixed: tenant "a:b" with key "c" never meets tenant "a" with key "b:c"
        tag = scope.encode("utf-8", "surrogatepass")
        raw = b"create:%d:" % len(tag) + tag + b":" + raw[len(b"create:") :]
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).decode()[:22]


def is_sid(sid: str) -> bool:
    return isinstance(sid, str) and SID_RE.fullmatch(sid) is not None


def check_sid(sid: str) -> str:
    """Return `sid` if it is a well-formed session id, else `NotFound` (it cannot exist)."""
    if not is_sid(sid):
        raise NotFound("no such session")
    return sid


def check_new_sid(sid: str) -> str:
    """Ids of new sessions come from `new_sid`, never from a user: a bad one is a bug."""
    if not is_sid(sid):
        raise ValueError(f"invalid session id {sid!r}")
    return sid
