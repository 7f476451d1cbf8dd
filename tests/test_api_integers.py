"""Integers from the outside go through one strict parser (app/api/parse.py): odd digits
("²" passes `str.isdigit()`, `int()` refuses it; 5,000 digits pass `isdigit()` and exceed
`int()`'s limit) are a 400 problem at every entry point, never a 500, and change nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as st_save

from app.api.parse import parse_uint
from app.problems import InvalidBody
from tests.fixtures_api import assert_problem, create

ST = "application/x-safetensors"
P = {"b": np.zeros(2, dtype=np.float32)}
ODD = ["²", "9" * 5000, "١٢", "１２", "-1", "1e3", "12x", "", "9" * 19]


def _header(text: str) -> bytes:
    """Servers decode header bytes as latin-1: "²" arrives as "²" when sent as b"\\xb2"."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def _version(client: TestClient, sid: str) -> int:
    r = client.get(f"/v1/sessions/{sid}")
    assert r.status_code == 200
    v: int = r.json()["version"]
    return v


def test_parse_uint_accepts_plain_ascii_digits() -> None:
    assert parse_uint("0", "x") == 0
    assert parse_uint(" 12 ", "x") == 12
    assert parse_uint("9" * 18, "x") == 10**18 - 1
    assert parse_uint(7, "x") == 7
    for bad in [*ODD, True, 1.0, -3, 10**18, 10**5000, None, [1]]:
        with pytest.raises(InvalidBody):
            parse_uint(bad, "x")


@pytest.mark.parametrize("odd", ODD)
def test_headers(client: TestClient, odd: str) -> None:
    sid = create(client, P)
    client.post(f"/v1/sessions/{sid}/step", json={"grads": {"b": [1.0, 1.0]}})
    step = f"/v1/sessions/{sid}/step"
    grads = st_save({"b": np.ones(2, dtype=np.float32)})
    for if_match in (_header(t) for t in (odd, f'"{odd}"', f'W/"{odd}"')):
        rs = [
            client.post(step, json={"grads": {"b": [1, 2]}}, headers={"if-match": if_match}),
            client.patch(
                f"/v1/sessions/{sid}",
                json={"hyperparams": {"lr": 0.5}},
                headers={"if-match": if_match},
            ),
            client.put(
                f"/v1/sessions/{sid}/params",
                json={"params": {"b": [3.0, 3.0]}},
                headers={"if-match": if_match},
            ),
        ]
        for r in rs:
            assert_problem(r, 400, "invalid-body")
    r = client.post(
        step, content=grads, headers={"content-type": ST, "optd-base-version": _header(odd)}
    )
    assert_problem(r, 400, "invalid-body")
    assert _version(client, sid) == 1


@pytest.mark.parametrize("odd", ODD)
def test_bodies(client: TestClient, odd: str) -> None:
    sid = create(client, P)
    step = f"/v1/sessions/{sid}/step"
    r = client.post(step, json={"grads": {"b": [1.0, 1.0]}, "base_version": odd})
    assert_problem(r, 400, "invalid-body")
    body = st_save({"b": np.ones(2, dtype=np.float32)}, metadata={"base_version": odd})
    r = client.post(step, content=body, headers={"content-type": ST})
    assert_problem(r, 400, "invalid-body")
    assert _version(client, sid) == 0


def test_json_integers_out_of_range(client: TestClient) -> None:
    sid = create(client, P)
    step = f"/v1/sessions/{sid}/step"
    for n in (10**18, 2**64 - 1, -1):
        body = json.dumps({"grads": {"b": [1.0, 1.0]}, "base_version": n})
        r = client.post(step, content=body, headers={"content-type": "application/json"})
        assert_problem(r, 400, "invalid-body")
    r = client.post(step, json={"grads": {"b": [1.0, 1.0]}, "base_version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1


@pytest.mark.parametrize("odd", ["²", "9" * 5000, "١٢", "-1", "1e3"])
def test_query(client: TestClient, odd: str) -> None:
    sid = create(client, P)
    for url in (f"/v1/sessions/{sid}/params?min_version={odd}", f"/v1/sessions?limit={odd}"):
        assert_problem(client.get(url), 400, "invalid-body")
