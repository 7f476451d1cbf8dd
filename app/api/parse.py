"""Integers from the outside (headers, JSON members, safetensors metadata), parsed once.

`str.isdigit()` accepts what `int()` refuses ("²", other Unicode digits) and `int()`
refuses more than 4300 digits, so both let odd input through to a 500. Every integer a
request carries goes through `parse_uint`: ASCII digits only and at most 18 of them
(below 2**63, so it also fits every store and SDK), else 400 `invalid-body`.
"""

from __future__ import annotations

import re
from typing import Any

from app.problems import InvalidBody

MAX_DIGITS = 18
_UINT = re.compile(rb"[0-9]{1,%d}" % MAX_DIGITS)
_LIMIT = 10**MAX_DIGITS


def parse_uint(value: Any, what: str) -> int:
    """A non-negative integer from a string (surrounding spaces allowed) or a JSON int."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < _LIMIT:
            return value
    elif isinstance(value, str):
        text = value.strip(" \t").encode("utf-8", "replace")
        if _UINT.fullmatch(text):
            return int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        shown = "an integer out of range"  # repr() of a huge int raises ValueError itself
    elif isinstance(value, str) and len(value) > 40:
        shown = f"{value[:20]!r}... ({len(value)} characters)"
    else:
        shown = repr(value)
    raise InvalidBody(
        f"{what} must be a non-negative integer of at most {MAX_DIGITS} ASCII digits, got {shown}"
    )
