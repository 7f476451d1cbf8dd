"""Smoke tests of `examples/`: every script runs with tiny step counts, exits 0, writes a
valid PNG and reports a loss that went down.

The scripts run as the user runs them (`python examples/<name>.py`), in a subprocess.
One starts its own embedded server (no `--url`), the others share one server started
here with the examples' own helper, `examples/_server.py`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    spec = importlib.util.spec_from_file_location("optd_examples_server", EXAMPLES / "_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.EmbeddedServer()
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


def run_example(name: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run one example; check its exit status and PNG; return its summary and stdout."""
    out = tmp_path / f"{name}.png"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert out.is_file(), proc.stdout
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert out.stat().st_size > 10_000  # a real figure, not an empty canvas
    lines = [line for line in proc.stdout.splitlines() if line.startswith("summary ")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0].removeprefix("summary ")), proc.stdout


def assert_loss_went_down(summary: dict[str, Any]) -> None:
    assert summary["final_loss"] < summary["initial_loss"], summary


def test_linear_regression_with_its_own_server(tmp_path: Path) -> None:
    summary, stdout = run_example("linear_regression", tmp_path, "--steps", "20")
    assert "started an embedded optd server" in stdout
    assert "watch it live: http://127.0.0.1:" in stdout  # the dashboard link (issue #19)
    assert "step    0" in stdout  # progress lines
    assert_loss_went_down(summary)
    assert summary["final_loss_by_lr"]["1"] < summary["final_loss_by_lr"]["0.01"]


def test_two_layer_net(tmp_path: Path, server_url: str) -> None:
    summary, _ = run_example("two_layer_net", tmp_path, "--url", server_url, "--epochs", "10")
    assert_loss_went_down(summary)


def test_rosenbrock(tmp_path: Path, server_url: str) -> None:
    summary, stdout = run_example(
        "rosenbrock", tmp_path, "--url", server_url, "--steps", "20", "--quiet"
    )
    # --quiet: no progress lines, only the file name and the summary
    assert not [line for line in stdout.splitlines() if line.startswith("step")], stdout
    assert_loss_went_down(summary)
    assert set(summary["final"]) == {"Adam", "AdamW", "AMSGrad", "RAdam", "AdaBelief", "Lion"}


def test_gaussian_mixture(tmp_path: Path, server_url: str) -> None:
    summary, _ = run_example("gaussian_mixture", tmp_path, "--url", server_url, "--steps", "20")
    assert_loss_went_down(summary)
    assert len(summary["final"]) == 12  # 6 optimizers x 2 starts


def test_adam_paper_digits(tmp_path: Path, server_url: str) -> None:
    summary, _ = run_example("adam_paper_digits", tmp_path, "--url", server_url, "--epochs", "1")
    assert_loss_went_down(summary)
    assert len(summary["final"]) == 8  # 2 models x 4 optimizers


def test_adam_paper_cnn(tmp_path: Path, server_url: str) -> None:
    summary, _ = run_example("adam_paper_cnn", tmp_path, "--url", server_url, "--epochs", "2")
    assert_loss_went_down(summary)


def test_adam_bias_correction(tmp_path: Path, server_url: str) -> None:
    summary, _ = run_example(
        "adam_bias_correction", tmp_path, "--url", server_url, "--epochs", "1",
        "--lrs", "0.01",
    )  # fmt: skip
    assert_loss_went_down(summary)
    assert len(summary["results"]) == 6  # 3 beta2 x with/without bias correction


def test_multi_worker(tmp_path: Path, server_url: str) -> None:
    summary, _ = run_example("multi_worker", tmp_path, "--url", server_url, "--steps", "24")
    assert_loss_went_down(summary)
    assert set(summary["final"]) == {"1", "4"}


def test_diloco(tmp_path: Path, server_url: str) -> None:
    summary, stdout = run_example("diloco", tmp_path, "--url", server_url, "--quick")
    assert_loss_went_down(summary)
    runs = summary["runs"]
    assert set(runs) == {"sync", "bf16", "int8"}
    for key, r in runs.items():
        # halfway, w3 was killed and the round that waited for it closed (its lease ran out)
        assert r["kill"]["close_s"] > 0 and r["kill"]["version"] >= r["rounds"] // 2, key
        assert f"[{key}] round {r['kill']['version']}: SIGKILL w3" in stdout
        # the spare w4 joined; joining before the last round, it was waited for (rule 2)
        assert "t" in r["join"], key
        if r["join"]["version"] < r["rounds"]:
            assert r["join"]["first_s"] > 0 and f"[{key}] w4 joined" in stdout, key
        assert r["final_loss"] < summary["initial_loss"] / 5, key
    # a round every 25 steps, half or a quarter of the bytes each: far fewer bytes
    assert runs["bf16"]["fewer_bytes_than_sync"] > 20
    assert runs["int8"]["fewer_bytes_than_sync"] > 40
