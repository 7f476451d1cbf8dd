"""Write testdata/wire/: wire vectors shared by the server tests and every SDK.

Run from the repository root:  .venv/bin/python testdata/gen_wire_vectors.py [OUT]
Everything comes from the server itself: safetensors files from
`app.codec.safetensors.encode`, problem bodies from `app.problems`, and the exchanges
from a scripted scenario driven through a real app (embedded store) with TestClient.
Session ids and timestamps are replaced by placeholders (`{A}`, `{B}`, `{timestamp}`),
so re-running gives identical bytes. See testdata/wire/README.md for the layout.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.codec import safetensors
from app.problems import ALL_PROBLEMS

OUT = Path(__file__).resolve().parent / "wire"
SETTINGS: dict[str, Any] = {"max_tensors": 8}  # small, so that a 413 is cheap to provoke
RESPONSE_HEADERS = (
    "content-type etag location optd-version optd-step idempotent-replayed "
    "retry-after vary preference-applied"
).split()
TIMESTAMPS = {"created_at", "updated_at"}

f16, f32, f64 = np.float16, np.float32, np.float64
BF16 = "bf16"  # marker: float32 values (exact in bfloat16) written as BF16


def golden() -> dict[str, tuple[list[tuple[str, Any]], list[list[str]] | None]]:
    """file -> (tensors in file order, metadata pairs). BF16 entries are (BF16, array)."""
    return {
        "grads_f32.safetensors": (
            [
                ("layer.0.weight", (np.arange(6, dtype=f32) * 0.5 - 1).reshape(2, 3)),
                ("scalar", np.array(3.25, dtype=f32)),
                ("empty", np.zeros((0,), dtype=f32)),
                ("vector", np.array([0.1, -2.5, 1e-30, 3.4e38, -0.0], dtype=f32)),
                ("cube", np.linspace(-1, 1, 6, dtype=f32).reshape(2, 1, 3)),
            ],
            None,
        ),
        "grads_f64.safetensors": (
            [
                ("w", np.array([[1 / 3, -2.0], [1e-300, 2.0**60]], dtype=f64)),
                ("b", np.array(-0.1, dtype=f64)),
            ],
            [["base_version", "3"], ["loss", "0.25"], ["worker", "w-1"]],
        ),
        "grads_f16.safetensors": (
            [
                ("h", np.array([65504.0, -6e-8, 0.5, 1 / 3, -0.0, 1.0], dtype=f16).reshape(3, 2)),
                ("s", np.array(2.0, dtype=f16)),
            ],
            None,
        ),
        "grads_bf16.safetensors": (
            [
                (
                    "w",
                    (
                        BF16,
                        np.array(
                            [[1.0, -2.5, 0.15625], [256.0, -0.0, 2.288818359375e-05]], dtype=f32
                        ),
                    ),
                ),
                ("b", (BF16, np.array([3.0, 0.099609375], dtype=f32))),
            ],
            None,
        ),
        "mixed.safetensors": (
            [
                ("ß.gamma", np.array([1.5, -2.0], dtype=f64)),
                ("emb.weight", np.array([[0.25, -1.0]], dtype=f32)),
                ("zero", np.zeros((2, 0), dtype=f32)),
                ("half", np.array([0.5, 1024.0], dtype=f16)),
                ("brain", (BF16, np.array([[-1.0], [0.5]], dtype=f32))),
            ],
            [["note", 'grads "ß"\n\ttab\u00e9 \\ \x01\x1f\x7f\u2028<&> end'], ["step", "7"]],
        ),
        "empty.safetensors": ([], None),
        "empty_metadata.safetensors": ([], []),
        "metadata_only.safetensors": ([], [["config", '{"optimizer":"adam"}']]),
    }


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    bits = values.astype(f32).view(np.uint32)
    assert not (bits & 0xFFFF).any(), "BF16 golden values must be exact in bfloat16"
    return (bits >> 16).astype(np.uint16)


def encode_golden(tensors: list[tuple[str, Any]], meta: list[list[str]] | None) -> bytes:
    """The server's `encode`; BF16 (which it only reads) goes in as F16-typed raw bits and
    the dtype is renamed in the header, re-padded exactly as `encode` pads."""
    arrays = {n: _bf16_bits(v[1]).view(f16) if isinstance(v, tuple) else v for n, v in tensors}
    blob = safetensors.encode(arrays, None if meta is None else dict(meta))
    bf16 = [n for n, v in tensors if isinstance(v, tuple)]
    if not bf16:
        return blob
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    for name in bf16:
        header[name]["dtype"] = "BF16"
    text = orjson.dumps(header)
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n :]


def describe(blob: bytes, tensors: list[tuple[str, Any]], meta: Any) -> dict[str, Any]:
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    entries = []
    for name, value in tensors:
        e = header[name]
        begin, end = e["data_offsets"]
        arr = value[1] if isinstance(value, tuple) else value
        raw = blob[8 + n + begin : 8 + n + end]
        values = [float(x) for x in np.asarray(arr, dtype=f64).reshape(-1)]
        entries.append({"name": name, "dtype": e["dtype"], "shape": e["shape"], "hex": raw.hex()})
        entries[-1]["values"] = values
    return {"sha256": hashlib.sha256(blob).hexdigest(), "metadata": meta, "tensors": entries}


def _raw(header: Any, data: bytes = b"", pad: bool = True) -> bytes:
    text = header if isinstance(header, bytes) else orjson.dumps(header)
    if pad:
        text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def _t(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def invalid() -> dict[str, tuple[bytes, str]]:
    """Bodies every strict reader must refuse: file -> (bytes, why)."""
    eight = bytes(8)
    return {
        "short.safetensors": (b"\x08\x00\x00\x00", "fewer than 8 bytes"),
        "header_too_long.safetensors": (
            (64).to_bytes(8, "little") + b"{}      ",
            "header length beyond the body",
        ),
        "header_not_json.safetensors": (_raw(b"{not json"), "header is not JSON"),
        "header_not_object.safetensors": (_raw(b"[]"), "header is not an object"),
        "gap.safetensors": (
            _raw({"a": _t("F32", [1], 0, 4), "b": _t("F32", [1], 8, 12)}, bytes(12)),
            "a gap between tensors",
        ),
        "overlap.safetensors": (
            _raw({"a": _t("F32", [2], 0, 8), "b": _t("F32", [1], 4, 8)}, eight),
            "tensors overlap",
        ),
        "not_from_zero.safetensors": (
            _raw({"a": _t("F32", [1], 4, 8)}, eight),
            "data does not start at offset 0",
        ),
        "trailing.safetensors": (
            _raw({"a": _t("F32", [1], 0, 4)}, eight),
            "bytes after the last tensor",
        ),
        "truncated.safetensors": (
            _raw({"a": _t("F32", [4], 0, 16)}, eight),
            "offsets beyond the data",
        ),
        "reversed_offsets.safetensors": (
            _raw({"a": _t("F32", [0], 4, 0)}, b""),
            "end before begin",
        ),
        "shape_mismatch.safetensors": (
            _raw({"a": _t("F32", [3], 0, 8)}, eight),
            "shape x itemsize != byte length",
        ),
        "negative_dim.safetensors": (
            _raw({"a": _t("F32", [-2], 0, 8)}, eight),
            "negative dimension",
        ),
        "dtype_int.safetensors": (_raw({"a": _t("I32", [2], 0, 8)}, eight), "I32 not allowed"),
        "dtype_unknown.safetensors": (_raw({"a": _t("Q4", [2], 0, 8)}, eight), "unknown dtype"),
        "duplicate_name.safetensors": (
            _raw(
                b'{"a":'
                + orjson.dumps(_t("F32", [1], 0, 4))
                + b',"a":'
                + orjson.dumps(_t("F32", [1], 4, 8))
                + b"}",
                eight,
            ),  # fmt: skip
            "the same name twice",
        ),
        "metadata_not_string.safetensors": (
            _raw({"__metadata__": {"step": 7}, "a": _t("F32", [1], 0, 4)}, bytes(4)),
            "a __metadata__ value that is not a string",
        ),
    }


def expected_problem(blob: bytes) -> str:
    try:
        safetensors.decode(blob)
    except Exception as exc:  # noqa: BLE001 - every Problem names its slug
        return str(getattr(exc, "slug", type(exc).__name__))
    raise AssertionError("an invalid golden file was accepted by the server's decoder")


def problems() -> dict[str, Any]:
    out = {}
    for cls in ALL_PROBLEMS:
        exc = cls(f"example {cls.slug} detail")
        out[cls.slug] = {"status": cls.status, "headers": exc.headers, "body": exc.to_dict()}
    return out


SAFETENSORS = "application/x-safetensors"
JSON_CT = {"content-type": "application/json"}


def scenario() -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The scripted exchanges (request specs) and their binary request bodies."""
    vec = lambda *v: {"shape": [len(v)], "dtype": "float32", "data": list(v)}  # noqa: E731
    mat = {"shape": [2, 2], "dtype": "float32", "data": [0.5, -0.25, 1.0, 0.0]}
    grads = {"w": mat, "b": vec(0.125, -1.0)}
    params = {"w": {**mat, "data": [0.5, -0.5, 1.0, 2.0]}, "b": vec(0.0, 0.0)}
    config = {"optimizer": "sgd", "mode": "sync", "workers": 2, "hyperparams": {"lr": 0.5}}
    bodies = {
        "step_safetensors.request.safetensors": safetensors.encode(
            {"w": np.array([[0.25, 0.5], [-1.0, 0.0]], f32), "b": np.array([1.0, -0.5], f32)}
        ),
        "create_sync_safetensors.request.safetensors": safetensors.encode(
            {"x": np.array([1.0, 2.0], f32)}, {"config": orjson.dumps(config).decode()}
        ),
    }
    st = {"content-type": SAFETENSORS, "accept": SAFETENSORS}
    a, b = "/v1/sessions/{A}", "/v1/sessions/{B}"
    key = {"idempotency-key": "wire-key-1"}
    spec: list[tuple[str, str, str, dict[str, Any]]] = [
        ("create", "POST", "/v1/sessions",
         {"json": {"optimizer": "adam", "hyperparams": {"lr": 0.1}, "params": params},
          "bind": "A"}),
        ("info", "GET", a, {}),
        ("step_json", "POST", a + "/step", {"json": {"grads": grads, "loss": 0.5}}),
        ("step_safetensors", "POST", a + "/step",
         {"file": "step_safetensors.request.safetensors",
          "headers": {**st, "optd-base-version": "1", "optd-worker": "w-1", "optd-loss": "0.25"}}),
        ("params_json", "GET", a + "/params", {"headers": {"accept": "application/json"}}),
        ("params_safetensors", "GET", a + "/params?names=w", {"headers": {"accept": SAFETENSORS}}),
        ("patch", "PATCH", a, {"json": {"hyperparams": {"lr": 0.05}, "max_staleness": 1}}),
        ("step_stale", "POST", a + "/step", {"json": {"grads": grads, "base_version": 0}}),
        ("step_if_match", "POST", a + "/step",
         {"json": {"grads": grads}, "headers": {"if-match": '"1"'}}),
        ("step_ahead", "POST", a + "/step", {"json": {"grads": grads, "base_version": 99}}),
        ("step_unknown_tensor", "POST", a + "/step", {"json": {"grads": {"nope": vec(1.0)}}}),
        ("step_unknown_field", "POST", a + "/step", {"json": {"grads": grads, "lr": 1.0}}),
        ("step_bad_json", "POST", a + "/step", {"text": '{"grads": ', "headers": JSON_CT}),
        ("step_media_type", "POST", a + "/step",
         {"text": "grads", "headers": {"content-type": "text/plain"}}),
        ("params_not_acceptable", "GET", a + "/params", {"headers": {"accept": "text/html"}}),
        ("step_too_many", "POST", a + "/step",
         {"json": {"grads": {f"g{i}": vec(0.0) for i in range(9)}}}),
        ("create_invalid_config", "POST", "/v1/sessions",
         {"json": {"optimizer": "nope", "params": {"x": vec(0.0)}}}),
        ("step_idempotent", "POST", a + "/step",
         {"json": {"grads": grads, "loss": 0.125}, "headers": key}),
        ("step_idempotent_replay", "POST", a + "/step",
         {"json": {"grads": grads, "loss": 0.125}, "headers": key}),
        ("step_idempotency_mismatch", "POST", a + "/step",
         {"json": {"grads": grads, "loss": 0.25}, "headers": key}),
        ("step_minimal", "POST", a + "/step",
         {"json": {"grads": grads}, "headers": {"prefer": "return=minimal"}}),
        ("step_updated_only", "POST", a + "/step?return=updated",
         {"json": {"grads": {"b": vec(0.5, 0.5)}}}),
        ("state_json", "GET", a + "/state", {"headers": {"accept": "application/json"}}),
        ("delete", "DELETE", a, {}),
        ("info_deleted", "GET", a, {}),
        ("create_sync_safetensors", "POST", "/v1/sessions",
         {"file": "create_sync_safetensors.request.safetensors",
          "headers": {"content-type": SAFETENSORS}, "bind": "B"}),
        ("sync_step_w1", "POST", b + "/step?wait=0",
         {"json": {"grads": {"x": vec(1.0, 0.5)}, "base_version": 0, "worker": "w1"}}),
        ("sync_step_w2", "POST", b + "/step?wait=0",
         {"json": {"grads": {"x": vec(0.0, 0.5)}, "base_version": 0, "worker": "w2"}}),
        ("sync_params_wait", "GET", b + "/params?min_version=1&wait=0", {}),
        ("sync_params_expired", "GET", b + "/params?min_version=2&wait=0", {}),
    ]  # fmt: skip
    specs = []
    for name, method, path, opts in spec:
        req: dict[str, Any] = {"method": method, "path": path}
        headers = dict(opts.get("headers", {}))
        if "json" in opts:
            headers = {**JSON_CT, **headers}
        req["headers"] = headers
        for kind in ("json", "text", "file"):
            if kind in opts:
                req[kind] = opts[kind]
        specs.append(
            {"name": name, "request": req, **({"bind": opts["bind"]} if "bind" in opts else {})}
        )
    return specs, bodies


def run(
    specs: list[dict[str, Any]], bodies: dict[str, bytes], redis_url: str | None = None
) -> list[dict[str, Any]]:
    """Send every spec to a fresh app; returns the exchanges with normalised responses.
    Binary response bodies are added to `bodies` as `<name>.response.safetensors`."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    ids: dict[str, str] = {}

    def sub(text: str) -> str:
        for token, sid in ids.items():
            text = text.replace("{" + token + "}", sid)
        return text

    def norm(obj: Any, key: str = "") -> Any:
        if key in TIMESTAMPS and isinstance(obj, int | float):
            return "{timestamp}"
        if isinstance(obj, dict):
            return {k: norm(v, k) for k, v in obj.items()}
        if isinstance(obj, list):
            return [norm(v) for v in obj]
        if isinstance(obj, str):
            for token, sid in ids.items():
                obj = obj.replace(sid, "{" + token + "}")
        return obj

    out = []
    with TestClient(create_app(Settings(redis_url=redis_url, **SETTINGS))) as client:
        for spec in specs:
            req = spec["request"]
            content = None
            if "json" in req:
                content = orjson.dumps(req["json"])
            elif "text" in req:
                content = req["text"].encode()
            elif "file" in req:
                content = bodies[req["file"]]
            headers = {k: sub(v) for k, v in req["headers"].items()}
            r = client.request(req["method"], sub(req["path"]), content=content, headers=headers)
            if "bind" in spec:
                ids[spec["bind"]] = r.json()["id"]
            kept = {h: norm(r.headers[h]) for h in RESPONSE_HEADERS if h in r.headers}
            rec: dict[str, Any] = {"status": r.status_code, "headers": kept}
            if r.content and r.headers["content-type"] == SAFETENSORS:
                rec["file"] = f"{spec['name']}.response.safetensors"
                bodies[rec["file"]] = r.content
            elif r.content:
                rec["json"] = norm(json.loads(r.content))
            out.append({**{k: v for k, v in spec.items() if k != "response"}, "response": rec})
    return out


def write_safetensors(out: Path) -> None:
    (out / "safetensors").mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (tensors, meta) in golden().items():
        blob = encode_golden(tensors, meta)
        (out / "safetensors" / name).write_bytes(blob)
        files[name] = describe(blob, tensors, meta)
    bad = {}
    for name, (blob, why) in invalid().items():
        (out / "safetensors" / name).write_bytes(blob)
        bad[name] = {"why": why, "problem": expected_problem(blob)}
    dump(out / "safetensors" / "manifest.json", {"files": files, "invalid": bad})


def dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gen_compress_vectors  # compress.json: bfloat16 and int8-block (DESIGN §3)

    gen_compress_vectors.main(out / "compress.json")
    write_safetensors(out)
    dump(out / "problems.json", problems())
    specs, bodies = scenario()
    exchanges = run(specs, bodies)
    (out / "bodies").mkdir(exist_ok=True)
    for name, blob in sorted(bodies.items()):
        (out / "bodies" / name).write_bytes(blob)
    dump(out / "exchanges.json", {"settings": SETTINGS, "exchanges": exchanges})


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    generate(out)
    print(f"wrote wire vectors to {out}")


if __name__ == "__main__":
    main()
