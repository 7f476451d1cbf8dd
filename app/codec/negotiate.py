"""Content negotiation for tensor bodies: JSON or safetensors, both ways.

Kept free of FastAPI so that the rules (RFC 9110 §12.5.1 and §8.3) are tested
directly: the most specific media range that matches an offer decides its q-value,
q=0 refuses it, and ties go to the range listed first, then to the route's default.
"""

from __future__ import annotations

from typing import Literal

from app.problems import NotAcceptable, UnsupportedMediaType

Format = Literal["json", "safetensors"]

JSON = "application/json"
SAFETENSORS = "application/x-safetensors"
OCTET = "application/octet-stream"
"""Accepted as safetensors: many HTTP clients label raw bytes this way."""

_REQUEST: dict[str, Format] = {JSON: "json", SAFETENSORS: "safetensors", OCTET: "safetensors"}
# Offers in response: an explicit octet-stream range also yields the safetensors bytes.
_OFFERS: tuple[tuple[str, Format], ...] = (
    (JSON, "json"),
    (SAFETENSORS, "safetensors"),
    (OCTET, "safetensors"),
)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def request_format(content_type: str | None) -> Format:
    """Pick the body parser from `Content-Type`; a missing header means JSON."""
    if content_type is None or not content_type.strip():
        return "json"
    found = _REQUEST.get(_media_type(content_type))
    if found is None:
        raise UnsupportedMediaType(
            f"Content-Type {content_type[:100]!r} is not supported; send {JSON} or "
            f"{SAFETENSORS} ({OCTET} is read as safetensors)",
            supported=[JSON, SAFETENSORS, OCTET],
        )
    return found


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    """Parse `Accept` into (type, subtype, q); malformed ranges are skipped."""
    out: list[tuple[str, str, float]] = []
    for item in accept.split(","):
        media, *params = item.split(";")
        kind, slash, sub = media.strip().lower().partition("/")
        if not slash or not kind or not sub or (kind == "*" and sub != "*"):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
                break  # parameters after q are accept-extensions, not media parameters
        if 0.0 <= q <= 1.0:
            out.append((kind, sub, q))
    return out


def response_format(accept: str | None, *, default: Format = "json") -> Format:
    """Choose the response representation from `Accept`, or raise `NotAcceptable`."""
    ranges = _ranges(accept) if accept else []
    if not ranges:  # absent, empty, or nothing parseable: like */*
        return default
    best: tuple[float, int, int] | None = None
    choice: Format = default
    for media, fmt in _OFFERS:
        kind, sub = media.split("/")
        match: tuple[int, int, float] | None = None  # (specificity, position, q)
        for pos, (rkind, rsub, q) in enumerate(ranges):
            if rkind == "*":
                spec = 0
            elif rkind == kind and rsub == "*":
                spec = 1
            elif rkind == kind and rsub == sub:
                spec = 2
            else:
                continue
            if match is None or spec > match[0]:
                match = (spec, pos, q)
        if match is None or match[2] == 0.0 or (media == OCTET and match[0] < 2):
            continue  # octet-stream counts only when named, so */* cannot undo a q=0
        # Higher q wins, then the range written first, then the default format.
        rank = (match[2], -match[1], 1 if fmt == default else 0)
        if best is None or rank > best:
            best, choice = rank, fmt
    if best is None:
        raise NotAcceptable(
            f"Accept {(accept or '')[:100]!r} allows none of {JSON}, {SAFETENSORS}; "
            "ask for one of them or */*",
            available=[JSON, SAFETENSORS],
        )
    return choice
