"""Fuzzing the JSON and safetensors tensor bodies through the API (DESIGN §3, §8).

Valid create, step, PUT params and PUT state bodies (JSON and safetensors) are mutated:
tree edits of the JSON and of the safetensors header (shapes, dtypes, offsets, names,
numbers such as 1e308, -0.0, denormals, 2**64 and raw tokens like NaN or 1e999), bit
patterns written into the tensor data, and byte edits of the framing (header length,
truncation, insertion). Whatever arrives:

- the answer is never a 5xx, and every error is a problem+json;
- a refused request changes nothing (`GET .../state` is identical before and after, and
  a refused create leaves no session behind);
- an accepted one moves the version by exactly one and leaves a consistent session:
  finite values, tensors that match the layout, and a session that still answers and
  steps without a 5xx (it is then restored, so every example starts from the same state);
- a body that declares a huge size (shape [2**40, 2**40], offsets near 2**64, a
  checkpoint layout of 2**28 elements, ...) is refused without allocating for it:
  `tracemalloc` (which sees numpy's buffers) bounds the peak of each such request, and
  the process's peak RSS may not grow by more than 256 MiB over such a test.

Each fuzz first runs a fixed list of explicit edits (the largest finite float32, a
gradient whose square overflows float32, denormals, -0.0, 2**64, negative, float and
boolean layout dimensions, a group that does not exist, negative step counts, a TTL
beyond Redis's range, ...), so those cases are covered whatever the derandomized
generator picks. Under pytest, numpy's RuntimeWarnings are errors (`filterwarnings =
error`), so an overflow inside the server shows up here as a 500.

Runs on the memory and redis stores; the cluster store kind is left out for time (the
codecs and the checks before a commit are the same code on every store).
"""

from __future__ import annotations

import copy
import json
import math
import resource
import struct
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as st_save

from app.core.config import Settings
from app.main import create_app
from tests.fixtures_api import assert_problem

ST = "application/x-safetensors"
JSON = "application/json"
EXAMPLES = 120  # per endpoint, format and store
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Failures print the generated example as it is: shrinking a stateful API fuzz costs
    # minutes, and the mutations are small enough to read.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
P = {
    "w": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
    "b": np.array([0.5, -0.25], dtype=np.float32),
}
G = {"w": np.full((2, 3), 0.125, dtype=np.float32), "b": np.array([1.0, -1.0], np.float32)}
CONFIG = {
    "optimizer": "adam",
    "hyperparams": {"lr": 0.01, "amsgrad": True},
    "groups": [{"match": ["b"], "weight_decay": 0.0}],
    "max_grad_norm": 10.0,
}
ENDPOINTS = ("create", "step", "put_params", "put_state")
PEAK_SLACK = 16 * 2**20  # bytes a small request may allocate, whatever it declares


class Raw(str):
    """A JSON token written as is: NaN, 1e999, -0, 01, ..."""


def dump(v: Any) -> str:
    """JSON text that may hold Raw tokens, big integers and lone surrogates."""
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{dump(str(k))}:{dump(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(dump(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


def tensor(a: np.ndarray) -> dict[str, Any]:
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.ravel().tolist()}


# ---------------------------------------------------------------------------- values

SPECIAL_NUMBERS = [
    0, -0.0, 1.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324,
    2.2250738585072014e-308, 2.225073858507201e-308, 1e-45, 1.401298464324817e-45,
    3.4028234663852886e38, 3.4028235677973366e38, 3.5e38, 65504.0, 65520.0, 6e-8,
    2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64, -(2**64) - 1, 10**30, 10**400,
]  # fmt: skip
RAW_TOKENS = [
    "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "-0", "-0.0",
    "0e-400", "1.0e-400", "2.4703282292062328e-324", "00", "01", "1.", ".5", "+1", "0x10",
    "1e", "--1", "tru", "nul",
]  # fmt: skip
BIG_DIMS = [2**31, 2**31 + 1, 2**32, 2**40, 2**62, 2**63, 2**64 - 1, 2**64, 2**80]
NUMBERS = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
    st.sampled_from(RAW_TOKENS).map(Raw),
)
SCALARS = st.one_of(NUMBERS, st.text(max_size=6), st.none(), st.booleans())
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=6,
)
DIMS = st.one_of(st.integers(-3, 7), st.sampled_from(BIG_DIMS), st.just(-(2**63)))
SHAPES = st.one_of(
    st.lists(DIMS, max_size=4),
    st.sampled_from([[1] * 65, [0, 2**64], [2**40, 2**40], [1.5], ["2"], [True], [None], [[2]]]),
    SCALARS,
)
JSON_DTYPES = ["float32", "float64", "float16", "bfloat16", "int8", "int32", "bool", "F32"]
JSON_DTYPES += ["Float32", "float32 ", ""]
ST_DTYPES = ["F16", "BF16", "F32", "F64", "I32", "I64", "I8", "U8", "BOOL", "F8_E4M3"]
ST_DTYPES += ["C64", "U64", "f32", "float32", ""]
NAMES = ["w", "b", "", "x" * 513, "nope", "w ", "W", "\u00e9", "\ud800", "__metadata__"]
NAMES += ["param/w", "a" * 512]
OFFSET = st.one_of(st.integers(-2, 40), st.sampled_from([2**32, 2**63, 2**64 - 1, 2**64]), SCALARS)
OFFSETS = st.one_of(st.lists(OFFSET, min_size=2, max_size=2), st.lists(OFFSET, max_size=3))
META_STRINGS = ["nan", "inf", "-inf", "1e308", "1e999", "-0.0", "5e-324", "0x1p3", "", "-1"]
META_STRINGS += ["99999999999999999999", "1", " 2 ", "w1", "x" * 300]
# Tensor values as their raw bits: NaN, infinities, -0.0, denormals, the largest finite.
SPECIAL_BITS = {
    "F16": [0x7E00, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x03FF, 0x7BFF],
    "BF16": [0x7FC0, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x7F7F],
    "F32": [0x7FC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x7F7FFFFF],
    "F64": [0x7FF8 << 48, 0x7FF << 52, 0xFFF << 52, 1 << 63, 1, 0x7FEFFFFFFFFFFFFF],
}
WIDTH = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}


ADDED_KEYS = ["shape", "dtype", "data", "grads", "params", "ttl_s", "labels", "max_staleness"]
SHAPE_KEYS = frozenset({"shape", "layout"})  # a list of dimensions lies below these
HOT_KEYS = frozenset({"shape", "dtype", "data_offsets", "layout", "steps", "scalars"})
HOT_KEYS |= {"__metadata__", "version", "loss", "base_version", "config", "hyperparams"}


def value_for(path: tuple[Any, ...], dtypes: list[str]) -> st.SearchStrategy[Any]:
    """A replacement for the node at `path`, fitting (or deliberately not) its place:
    a shape gets dimensions, a dtype dtypes, a tensor's number special numbers."""
    key = path[-1] if path else None
    if key == "shape":
        return SHAPES
    if key == "dtype":
        return st.one_of(st.sampled_from(dtypes), SCALARS)
    if key == "data_offsets":
        return OFFSETS
    if key == "data":
        return st.one_of(st.lists(NUMBERS, max_size=8), st.lists(st.lists(NUMBERS)), ANY)
    if key == "__metadata__":
        return st.one_of(
            st.dictionaries(st.sampled_from(["loss", "worker", "base_version", "config", "optd"]),
                            st.one_of(st.sampled_from(META_STRINGS), ANY), max_size=3),
            ANY,
        )  # fmt: skip
    if isinstance(key, int) and SHAPE_KEYS & set(path[:-1]):
        return st.one_of(DIMS, DIMS, NUMBERS)  # a dimension (or a layout's name/group)
    if isinstance(key, int):
        return st.one_of(NUMBERS, NUMBERS, NUMBERS, ANY)  # mostly a tensor's number
    return st.one_of(NUMBERS, ANY)


def paths(tree: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, (*here, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, (*here, i))


def get(tree: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


@st.composite
def mutate_tree(draw: st.DrawFn, tree: Any, dtypes: list[str]) -> Any:
    """One edit anywhere in a JSON tree: replace, drop, add or rename a member, cut,
    grow or nest a list. Half the edits go below the members that describe tensors
    (shape, dtype, offsets, a checkpoint's layout and steps, metadata, options)."""
    tree = copy.deepcopy(tree)
    every = list(paths(tree))
    hot = [p for p in every if HOT_KEYS & set(p)]
    path = draw(st.sampled_from(hot if hot and draw(st.booleans()) else every))
    if not path:
        return draw(st.one_of(ANY, st.just(tree)))
    parent, key = get(tree, path[:-1]), path[-1]
    node = parent[key]
    ops = ["replace", "replace", "drop"]
    if isinstance(node, dict):
        ops += ["add", "rename"]
    if isinstance(node, list):
        ops += ["cut", "grow", "nest"]
    op = draw(st.sampled_from(ops))
    if op == "replace":
        parent[key] = draw(value_for(path, dtypes))
    elif op == "drop":
        del parent[key]
    elif op == "add":
        new = draw(st.one_of(st.sampled_from(ADDED_KEYS), st.text()))
        node[new] = draw(value_for((*path, new), dtypes))
    elif op == "rename" and node:
        old = draw(st.sampled_from(list(node)))
        node[draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=4)))] = node.pop(old)
    elif op == "cut":
        del node[draw(st.integers(0, len(node))) :]
    elif op == "grow":
        node.append(draw(value_for((*path, len(node)), dtypes)))
    elif op == "nest":
        parent[key] = [node]
    return tree


@st.composite
def mutate_embedded(draw: st.DrawFn, header: Any) -> Any:
    """Edit the JSON document a safetensors `__metadata__` carries as a string (a
    checkpoint's `optd` meta, a create's `config`)."""
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    docs = [k for k in ("optd", "config") if isinstance(meta, dict) and k in meta]
    if not docs:
        return header
    key = draw(st.sampled_from(docs))
    try:
        doc = json.loads(meta[key])
    except (TypeError, ValueError):
        return header
    header = copy.deepcopy(header)
    header["__metadata__"][key] = dump(draw(mutate_tree(doc, JSON_DTYPES)))
    return header


@st.composite
def mutate_bytes(draw: st.DrawFn, body: bytes) -> bytes:
    """A byte edit: overwrite, delete, insert, truncate or repeat a slice."""
    n = len(body)
    i = draw(st.integers(0, n))
    j = draw(st.integers(i, min(n, i + 16)))
    op = draw(st.sampled_from(["set", "delete", "insert", "truncate", "repeat"]))
    if op == "set" and i < n:
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    if op == "delete":
        return body[:i] + body[j:]
    if op == "insert":
        return body[:i] + draw(st.binary(min_size=1, max_size=8)) + body[i:]
    if op == "truncate":
        return body[:i]
    return body[:j] + body[i:j] + body[j:]


@st.composite
def fuzzed_json(draw: st.DrawFn, base: Any) -> bytes:
    tree = base
    for _ in range(draw(st.integers(0, 3))):
        tree = draw(mutate_tree(tree, JSON_DTYPES))
    body = encode(dump(tree))
    if draw(st.integers(0, 9)) == 0:
        body = draw(mutate_bytes(body))
    return body


def split_safetensors(body: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(body[:8], "little")
    header: dict[str, Any] = json.loads(body[8 : 8 + n])
    return header, body[8 + n :]


@st.composite
def special_bits(draw: st.DrawFn, header: Any, data: bytes) -> bytes:
    """Write NaN, an infinity, -0.0, a denormal or the largest finite value into a tensor."""
    entries = []
    for name, e in header.items() if isinstance(header, dict) else ():
        try:
            begin, end = e["data_offsets"]
            if not (isinstance(begin, int) and isinstance(end, int)):
                continue  # offsets mutated into other types: nothing to write into
            if name != "__metadata__" and end - begin >= WIDTH[e["dtype"]] and end <= len(data):
                entries.append((e["dtype"], begin, end))
        except (KeyError, TypeError, ValueError):
            continue  # an entry mutated out of shape has nothing to write into
    if not entries:
        return data
    dtype, begin, end = draw(st.sampled_from(entries))
    width = WIDTH[dtype]
    at = begin + width * draw(st.integers(0, (end - begin) // width - 1))
    return write_bits(data, at, dtype, draw(st.sampled_from(SPECIAL_BITS[dtype])))


def write_bits(data: bytes, at: int, dtype: str, bits: int) -> bytes:
    width = WIDTH[dtype]
    return data[:at] + bits.to_bytes(width, "little") + data[at + width :]


def frame(header: Any, data: bytes, pad: int | None = None, n: int | None = None) -> bytes:
    text = encode(dump(header))
    text += b" " * (-len(text) % 8 if pad is None else pad)
    return struct.pack("<Q", len(text) if n is None else n) + text + data


@st.composite
def fuzzed_safetensors(draw: st.DrawFn, base: bytes) -> bytes:
    header, data = split_safetensors(base)
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["header", "header", "embedded", "bits", "bits", "data"]))
        if what == "header":
            header = draw(mutate_tree(header, ST_DTYPES))
        elif what == "embedded":
            header = draw(mutate_embedded(header))
        elif what == "bits":
            data = draw(special_bits(header, data))
        else:
            data = draw(mutate_bytes(data))
    size = len(encode(dump(header)))
    pad = draw(st.sampled_from([None, 0, 1]))
    n = draw(
        st.one_of(
            st.none(),
            st.sampled_from([0, 1, size - 1, size + 1, 2**32, 2**63, 2**64 - 1]),
        )
    )
    body = frame(header, data, pad, None if n is None else max(n, 0))
    if draw(st.integers(0, 9)) == 0:
        body = draw(mutate_bytes(body))
    return body


OPTD_HEADERS = st.dictionaries(
    st.sampled_from(["optd-loss", "optd-base-version", "optd-worker"]),
    st.sampled_from(["nan", "inf", "1e308", "1e999", "-0.0", "5e-324", "-1", "0", "", "w1"]),
    max_size=2,
)

# ----------------------------------------------------------------- explicit examples
# Edits every run tries before the generated ones, so that the edge cases this file is
# about are always covered whatever the derandomized generator picks: (path, value).
F32_MAX = 3.4028234663852886e38  # finite in float32; its square is not
TENSOR_EDITS: list[tuple[tuple[Any, ...], Any]] = [
    (("w", "data", 4), F32_MAX),
    (("w", "data", 4), -1.9e19),  # the square overflows float32
    (("w", "data", 0), -0.0),
    (("w", "data", 0), 5e-324),  # a float64 denormal: 0 in float32
    (("w", "data", 0), 1e-45),  # a float32 denormal
    (("w", "data", 0), 1e308),  # overflows float32: refused
    (("w", "data", 0), Raw("1e999")),
    (("w", "data", 0), 2**64),
    (("w", "shape"), [2**40, 2**40]),
    (("w", "shape"), [3, 2]),
    (("w", "dtype"), "int8"),
]
LAYOUT_EDITS: list[tuple[tuple[Any, ...], Any]] = [
    (("layout", 0, 1), [-2, -3]),  # same element count, negative dimensions
    (("layout", 0, 1), [2.0, 3]),
    (("layout", 0, 1), [True, 6]),
    (("layout", 0, 1), [2**40, 2**40]),
    (("layout", 0, 1), [2**14, 2**14]),  # 2**28 elements declared, 6 sent
    (("layout", 0, 2), 7),  # a group that does not exist
    (("layout", 0, 2), -1),
    (("steps",), [-5, 1]),
    (("options", "ttl_s"), 2**62),
    (("layout",), []),
]
STATE_TENSOR_EDITS: list[tuple[tuple[Any, ...], Any]] = [
    (("exp_avg/w", "data", 0), F32_MAX),
    (("exp_avg_sq/w", "data", 0), F32_MAX),
    (("param/w", "data", 0), F32_MAX),
]


def edited(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    tree = copy.deepcopy(tree)
    get(tree, path[:-1])[path[-1]] = value
    return tree


def explicit_json(endpoint: str, base: Any) -> list[bytes]:
    if endpoint == "put_state":
        edits = [(("meta", *p), v) for p, v in LAYOUT_EDITS]
        edits += [(("tensors", *p), v) for p, v in STATE_TENSOR_EDITS]
    else:
        key = "grads" if endpoint == "step" else "params"
        edits = [((key, *p), v) for p, v in TENSOR_EDITS]
        if endpoint == "step":
            edits += [(("grads", "b", 0), F32_MAX), (("loss",), 1e308), (("loss",), Raw("NaN"))]
        if endpoint == "create":
            edits += [(("ttl_s",), 2**62), (("hyperparams", "lr"), 1e308)]
            edits += [(("max_grad_norm",), 5e-324)]
    return [encode(dump(edited(base, p, v))) for p, v in edits]


def explicit_safetensors(endpoint: str, base: bytes) -> list[bytes]:
    header, data = split_safetensors(base)
    out = []
    for name, entry in header.items():
        if name.endswith("w") and entry["dtype"] == "F32":
            begin = entry["data_offsets"][0]
            out.append(frame(header, write_bits(data, begin, "F32", 0x7F7FFFFF)))  # F32_MAX
            out.append(frame(header, write_bits(data, begin, "F32", 0x00000001)))  # denormal
            out.append(frame(edited(header, (name, "shape"), [2**40, 2**40]), data))
            out.append(frame(edited(header, (name, "data_offsets", 1), 2**64 - 1), data))
    meta = header.get("__metadata__", {})
    for key in ("optd", "config"):
        if key not in meta:
            continue
        doc = json.loads(meta[key])
        edits = LAYOUT_EDITS if key == "optd" else [(("ttl_s",), 2**62)]
        for path, value in edits:
            new = edited(header, ("__metadata__", key), dump(edited(doc, path, value)))
            out.append(frame(new, data))
    out.append(frame(header, data, n=2**64 - 1))
    return out


# ---------------------------------------------------------------------------- the API


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's: memory and redis only (see the module docstring)."""
    return str(request.param)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """Unexpected errors come back as 500 responses (which the checks report) instead of
    being raised into the test."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


class Target:
    """One session, its checkpoint, and the valid bodies the fuzz starts from."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        params = {k: tensor(v) for k, v in P.items()}
        r = client.post("/v1/sessions", json={"params": params, **CONFIG})
        assert r.status_code == 201, r.text
        self.sid = r.json()["id"]
        step = client.post(self.url("step"), json={"grads": {k: tensor(v) for k, v in G.items()}})
        assert step.status_code == 200, step.text
        self.checkpoint = self.state("the baseline")
        got = client.get(self.url("state"), headers={"accept": ST})
        assert got.status_code == 200, got.text
        self.checkpoint_st = got.content
        self.clean = True

    def url(self, what: str = "") -> str:
        return f"/v1/sessions/{self.sid}" + (f"/{what}" if what else "")

    def state(self, context: str, sid: str | None = None) -> dict[str, Any]:
        r = self.client.get(f"/v1/sessions/{sid or self.sid}/state")
        assert r.status_code == 200, f"GET .../state answers {r.status_code} after {context}"
        out: dict[str, Any] = r.json()
        return out

    def restore(self) -> None:
        r = self.client.put(self.url("state"), json=self.checkpoint)
        assert r.status_code == 200, r.text

    def begin(self) -> None:
        """Start an example from the baseline. An example that failed may have left the
        session changed or broken (it is then recreated under its id): a failure is
        reported where it happens, not again in the examples after it."""
        if self.clean:
            return
        r = self.client.put(self.url("state"), json=self.checkpoint)
        if r.status_code != 200:
            self.client.delete(self.url())
            r = self.client.put(self.url("state"), json=self.checkpoint)
            assert r.status_code == 201, r.text
        for sid in set(self.sessions()) - {self.sid}:
            self.client.delete(f"/v1/sessions/{sid}")
        self.clean = True

    def sessions(self) -> list[str]:
        r = self.client.get("/v1/sessions", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return sorted(s["id"] for s in r.json()["sessions"])

    def bases(self, endpoint: str) -> tuple[Any, bytes]:
        """The valid JSON tree and safetensors body an endpoint's fuzz starts from."""
        params = {k: tensor(v) for k, v in P.items()}
        if endpoint == "create":
            meta = {"config": json.dumps(CONFIG)}
            return {"params": params, **CONFIG}, st_save(P, metadata=meta)
        if endpoint == "step":
            grads = {"w": tensor(G["w"]), "b": G["b"].tolist()}
            return {"grads": grads, "loss": 0.5}, st_save(G, metadata={"loss": "0.5"})
        if endpoint == "put_params":
            return {"params": params}, st_save(P)
        return self.checkpoint, self.checkpoint_st

    def request(self, endpoint: str, body: bytes, ctype: str, headers: dict[str, str]) -> Any:
        method, path = {
            "create": ("POST", "/v1/sessions"),
            "step": ("POST", self.url("step")),
            "put_params": ("PUT", self.url("params")),
            "put_state": ("PUT", self.url("state")),
        }[endpoint]
        return self.client.request(
            method, path, content=body, headers={"content-type": ctype, **headers}
        )


def describe(endpoint: str, ctype: str, body: bytes, r: Any) -> str:
    shown = repr(body[:4000]) + ("..." if len(body) > 4000 else "")
    return f"{endpoint} {ctype} body={shown} -> {r.status_code} {r.text[:400]}"


def finite(data: list[Any]) -> bool:
    return all(type(x) in (int, float) and math.isfinite(x) for x in data)


def check_consistent(target: Target, sid: str, what: str, version: int) -> None:
    """An accepted write leaves a session with the expected version, finite values,
    tensors that match its layout, and that still answers and steps without a 5xx."""
    state = target.state(what, sid)
    assert state["version"] == version, f"version {state['version']}, not {version}: {what}"
    shapes = {entry[0]: entry[1] for entry in state["meta"]["layout"]}
    for name, shape in shapes.items():
        ok = all(type(d) is int and d >= 0 for d in shape)
        assert ok, f"layout {name!r} has the shape {shape}: {what}"
    for key, t in state["tensors"].items():
        name = key.partition("/")[2]
        assert t["shape"] == shapes.get(name), f"{key} has the shape {t['shape']}: {what}"
        assert math.prod(t["shape"]) == len(t["data"]), f"{key} has {len(t['data'])} values"
        assert finite(t["data"]), f"{key} is not finite ({t['data']}) after {what}"
    for name in shapes:
        assert f"param/{name}" in state["tensors"], f"param/{name} is missing: {what}"
    client = target.client
    for path in (f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/params"):
        r = client.get(path)
        assert r.status_code == 200, f"GET {path} answers {r.status_code} after {what}"
    if sum(math.prod(s) for s in shapes.values()) > 10**6:
        return
    grads = {n: {"shape": s, "data": [0.5] * math.prod(s)} for n, s in shapes.items()}
    r = client.post(f"/v1/sessions/{sid}/step", json={"grads": grads}, params={"wait": 0})
    assert r.status_code < 500, f"a valid step answers {r.status_code} {r.text} after {what}"
    if r.status_code >= 400:
        assert_problem(r, r.status_code)
    elif r.status_code == 200:
        after = target.state(what, sid)
        assert after["version"] == version + 1
        for key, t in after["tensors"].items():
            assert finite(t["data"]), f"{key} is not finite after a valid step after {what}"


def exchange(
    target: Target, endpoint: str, body: bytes, ctype: str, headers: dict[str, str]
) -> None:
    """Send one body and check the outcome against the state before it."""
    target.begin()
    target.clean = False
    before = target.state("the previous example")
    listing = target.sessions() if endpoint == "create" else None
    r = target.request(endpoint, body, ctype, headers)
    what = describe(endpoint, ctype, body, r)
    assert r.status_code < 500, what
    if r.status_code >= 400:
        assert_problem(r, r.status_code)
    after = target.state(what)
    if not 200 <= r.status_code < 300:
        assert after == before, "a refused request changed the session: " + what
        if listing is not None:
            assert target.sessions() == listing, "a refused create left a session: " + what
    elif endpoint == "create":
        assert r.status_code == 201, what
        assert after == before, what
        check_consistent(target, r.json()["id"], what, 0)
        assert target.client.delete(f"/v1/sessions/{r.json()['id']}").status_code == 204
    else:
        assert r.status_code == 200, what
        check_consistent(target, target.sid, what, before["version"] + 1)
        target.restore()
    target.clean = True


def with_examples(test: Any, bodies: list[bytes]) -> Any:
    for body in bodies:
        test = example(body=body)(test)
    return test


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_json_bodies(api: TestClient, endpoint: str) -> None:
    target = Target(api)
    base, _ = target.bases(endpoint)

    @FUZZ
    @given(body=fuzzed_json(base))
    def run(body: bytes) -> None:
        exchange(target, endpoint, body, JSON, {})

    with_examples(run, explicit_json(endpoint, base))()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_safetensors_bodies(api: TestClient, endpoint: str) -> None:
    target = Target(api)
    _, base = target.bases(endpoint)
    headers = OPTD_HEADERS if endpoint == "step" else st.just({})

    @FUZZ
    @given(body=fuzzed_safetensors(base), headers=headers, octet=st.booleans())
    def run(body: bytes, headers: dict[str, str], octet: bool) -> None:
        ctype = "application/octet-stream" if octet else ST
        exchange(target, endpoint, body, ctype, headers)

    for body in explicit_safetensors(endpoint, base):
        run = example(body=body, headers={}, octet=False)(run)
    run()


# ---------------------------------------------------------------------------- sizes

# Where a body declares its size: (format, place); `layout` is a checkpoint's meta.
DECLARATIONS = [
    ("json", "shape"),  # {"shape": dims, "data": []}
    ("json", "shape+data"),  # {"shape": dims, "data": [1.0]}
    ("json", "layout"),
    ("safetensors", "shape"),  # offsets left as they were
    ("safetensors", "offsets"),  # offsets that agree with the shape
    ("safetensors", "header-length"),
    ("safetensors", "layout"),
]


def declare_json(endpoint: str, base: Any, place: str, dims: list[int]) -> bytes:
    if place == "layout":
        return encode(dump(edited(base, ("meta", "layout", 0, 1), dims)))
    key = {"create": "params", "put_params": "params", "step": "grads"}.get(endpoint, "tensors")
    name = next(iter(base[key]))
    big = {"shape": dims, "dtype": "float32", "data": [1.0] if place == "shape+data" else []}
    return encode(dump(edited(base, (key, name), big)))


def declare_safetensors(base: bytes, place: str, dims: list[int]) -> bytes:
    header, data = split_safetensors(base)
    if place == "layout":
        doc = edited(json.loads(header["__metadata__"]["optd"]), ("layout", 0, 1), dims)
        return frame(edited(header, ("__metadata__", "optd"), dump(doc)), data)
    name = next(k for k in header if k != "__metadata__")
    header = edited(header, (name, "shape"), dims)
    if place == "offsets":
        begin = header[name]["data_offsets"][0]
        end = min(begin + math.prod(dims) * WIDTH[header[name]["dtype"]], 2**64 - 1)
        header = edited(header, (name, "data_offsets", 1), end)
    return frame(header, data, n=2**62 if place == "header-length" else None)


@st.composite
def declared_dims(draw: st.DrawFn) -> list[int]:
    """Shapes that declare far more than the body holds: 2**28 elements and up."""
    total = draw(st.integers(28, 128))
    rest = draw(st.lists(st.integers(0, 40), max_size=2))
    dims = [2 ** max(total - sum(rest), 1), *(2**k for k in rest)]
    return draw(st.permutations(dims))


@pytest.mark.parametrize(("fmt", "place"), DECLARATIONS, ids=[f"{f}-{p}" for f, p in DECLARATIONS])
def test_declared_sizes_do_not_allocate(api: TestClient, fmt: str, place: str) -> None:
    target = Target(api)
    endpoints = ["put_state"] if place == "layout" else list(ENDPOINTS)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(FUZZ, max_examples=12)
    @given(endpoint=st.sampled_from(endpoints), dims=declared_dims())
    def run(endpoint: str, dims: list[int]) -> None:
        jbase, sbase = target.bases(endpoint)
        if fmt == "json":
            body, ctype = declare_json(endpoint, jbase, place, dims), JSON
        else:
            body, ctype = declare_safetensors(sbase, place, dims), ST
        target.begin()
        target.clean = False
        before = target.state("the previous example")
        tracemalloc.start()
        try:
            r = target.request(endpoint, body, ctype, {})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        what = describe(endpoint, ctype, body, r)
        assert r.status_code < 500, what
        assert peak <= PEAK_SLACK + 8 * len(body), f"peak {peak / 2**20:.0f} MiB: {what}"
        assert 400 <= r.status_code < 500, what
        assert_problem(r, r.status_code)
        assert target.state(what) == before, "a refused request changed the session: " + what
        target.clean = True

    run()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before  # KiB on Linux
    assert grown < 256 * 1024, f"peak RSS grew by {grown / 1024:.0f} MiB"
