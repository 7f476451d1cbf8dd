"""Content-Type and Accept handling for tensor bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codec.negotiate import (
    JSON,
    OCTET,
    SAFETENSORS,
    Format,
    request_format,
    response_format,
)
from app.problems import NotAcceptable, UnsupportedMediaType


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("  ", "json"),
        (JSON, "json"),
        ("application/json; charset=utf-8", "json"),
        ("Application/JSON", "json"),
        (SAFETENSORS, "safetensors"),
        (" application/x-safetensors ; foo=bar", "safetensors"),
        (OCTET, "safetensors"),
    ],
)
def test_request_format(content_type: str | None, expected: Format) -> None:
    assert request_format(content_type) == expected


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", "json"]
)
def test_request_format_rejects_other_types(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        request_format(content_type)
    assert info.value.detail == (
        f"Content-Type {content_type!r} is not supported; send application/json or "
        "application/x-safetensors (application/octet-stream is read as safetensors)"
    )
    assert info.value.extra == {"supported": [JSON, SAFETENSORS, OCTET]}


@pytest.mark.parametrize(
    ("accept", "default", "expected"),
    [
        (None, "json", "json"),
        (None, "safetensors", "safetensors"),
        ("", "safetensors", "safetensors"),
        ("garbage, also-garbage", "safetensors", "safetensors"),  # nothing parseable: as if absent
        ("*/*", "json", "json"),
        ("*/*", "safetensors", "safetensors"),
        ("application/*", "safetensors", "safetensors"),
        (JSON, "safetensors", "json"),
        (SAFETENSORS, "json", "safetensors"),
        (OCTET, "json", "safetensors"),
        ("APPLICATION/X-SAFETENSORS", "json", "safetensors"),
        # order in the header breaks ties between equal q-values
        (f"{SAFETENSORS}, {JSON}", "json", "safetensors"),
        (f"{JSON}, {SAFETENSORS}", "safetensors", "json"),
        # higher q wins wherever it is written
        (f"{JSON};q=0.5, {SAFETENSORS}", "json", "safetensors"),
        (f"{SAFETENSORS};q=0.2, {JSON};q=0.9", "safetensors", "json"),
        (f"{SAFETENSORS};q=0.2, */*;q=0.1", "json", "safetensors"),
        # the most specific range decides, even with a lower q
        (f"*/*;q=1, {JSON};q=0", "json", "safetensors"),
        (f"application/*;q=0.9, {SAFETENSORS};q=0.1", "safetensors", "json"),
        # q=0 on safetensors is not undone by */* through the octet-stream alias
        (f"*/*, {SAFETENSORS};q=0", "safetensors", "json"),
        (f"text/html, {JSON};q=0.1", "safetensors", "json"),
        ("application/json;charset=utf-8;q=0.5, text/*", "json", "json"),
        (f"{JSON};q=abc, {SAFETENSORS}", "json", "safetensors"),  # bad q: range ignored
        (f"{JSON};q=1.5, {SAFETENSORS};q=0.3", "json", "safetensors"),
        (f"{SAFETENSORS};level=1;q=0.3;ext=1, {JSON};q=0.2", "json", "safetensors"),
        ("*/json, application/json;q=0.1", "safetensors", "json"),  # */json is malformed
    ],
)
def test_response_format(accept: str | None, default: Format, expected: Format) -> None:
    assert response_format(accept, default=default) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/problem+json",
        f"{JSON};q=0, {SAFETENSORS};q=0",
        "*/*;q=0",
        "application/*;q=0, text/html",
    ],
)
def test_nothing_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        response_format(accept)
    assert info.value.detail == (
        f"Accept {accept!r} allows none of application/json, application/x-safetensors; "
        "ask for one of them or */*"
    )
    assert info.value.extra == {"available": [JSON, SAFETENSORS]}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["json", "safetensors"]))
def test_arbitrary_headers_only_raise_problems(header: str, default: Format) -> None:
    try:
        assert response_format(header, default=default) in ("json", "safetensors")
    except NotAcceptable:
        pass
    try:
        assert request_format(header) in ("json", "safetensors")
    except UnsupportedMediaType:
        pass
