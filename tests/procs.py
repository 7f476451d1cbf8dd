"""Real `optd serve` processes for tests: start on a free port, wait until ready, stop."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.redisproc import free_port

ROOT = Path(__file__).resolve().parent.parent


def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """`optd serve` on a free loopback port; its output goes to a temp file (a pipe nobody
    reads would block a chatty server).

    Session owners are off unless `env` sets OPTD_OWNERS: the tests that start several
    processes prove that correctness holds across processes without owners (each step
    may land on either process, so the compare-and-set is what keeps them right), and
    their clients do not follow redirects. tests/test_owners.py turns owners on."""
    port = free_port()
    full_env = (
        {k: v for k, v in os.environ.items() if not k.startswith("OPTD_")}
        | {"OPTD_OWNERS": "off"}
        | env
    )
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *args],
        env=full_env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.log = log  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"optd serve exited: {output(proc)}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("optd serve did not become ready in 20 s")


def output(proc: subprocess.Popen[str]) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read())


def stop(proc: subprocess.Popen[str]) -> str:
    """Terminate (or, if it is already dead, just reap) and return everything it printed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = output(proc)
    proc.log.close()  # type: ignore[attr-defined]
    return out
