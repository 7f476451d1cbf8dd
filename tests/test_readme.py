"""The README's runnable examples run, as written, against a live `optd serve`.

Which blocks: a fenced code block is run when the line right before its opening fence
is an HTML comment naming it (invisible on GitHub):

    <!-- readme-test: curl -->
    ```bash
    ...
    ```

`EXPECTED` lists the names and languages that README.md must mark, so a marker cannot
disappear unnoticed. Before running, the test points the block at its own server: every
`localhost:8000` / `127.0.0.1:8000` becomes the server's address (a block must use one
of them, so it can never reach a real server on port 8000). `bash` blocks run with
`bash -e -u -o pipefail`, `python` blocks with this interpreter; a trailing comment
`# ~<number>` on a line that prints a number states what it prints, to a factor of 10.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ROOT, start, stop

README = ROOT / "README.md"
EXPECTED = {"curl": "bash", "httpx": "python", "python-sdk": "python"}
MARKER = re.compile(r"^<!--\s*readme-test:\s*([\w-]+)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
DEFAULT_ADDRESS = re.compile(r"(localhost|127\.0\.0\.1):8000\b")
PENDING = "apply the README text from the h-sdkdocs report (markers and corrected snippets)"


def marked_blocks(text: str) -> dict[str, tuple[str, str]]:
    """name -> (info string, code) of every fenced block right after a readme-test marker."""
    lines = text.splitlines()
    blocks: dict[str, tuple[str, str]] = {}
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        name = m.group(1)
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        assert fence, f"README.md line {i + 1}: the marker {name!r} is not right before a ```"
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md line {i + 2}: the block {name!r} is never closed"
        assert name not in blocks, f"README.md marks two blocks {name!r}"
        blocks[name] = (fence.group(1), "\n".join(lines[i + 2 : end]) + "\n")
    return blocks


def block(name: str) -> str:
    blocks = marked_blocks(README.read_text())
    assert name in blocks, f"README.md has no block marked <!-- readme-test: {name} -->: {PENDING}"
    lang, code = blocks[name]
    assert lang == EXPECTED[name], f"block {name!r} is ```{lang}, expected ```{EXPECTED[name]}"
    return code


def aimed_at(code: str, url: str) -> str:
    assert DEFAULT_ADDRESS.search(code), "the block must talk to localhost:8000 / 127.0.0.1:8000"
    return DEFAULT_ADDRESS.sub(url.removeprefix("http://"), code)


def claimed(code: str, printed: str) -> None:
    """`print(...)  # ~4e-8` must be right to a factor of 10."""
    m = re.search(r"print\(.*#\s*~\s*([0-9.]+(?:e[-+]?\d+)?)\s*$", code, re.M)
    assert m, "the print line states what it prints: `# ~<number>`"
    value, said = float(printed), float(m.group(1))
    ok = value > 0 and abs(math.log10(value / said)) < 1
    assert ok, f"prints {value}, the README says ~{said}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    proc, url = start({})
    try:
        yield url
    finally:
        stop(proc)


def test_readme_marks_the_runnable_blocks() -> None:
    blocks = marked_blocks(README.read_text())
    assert {n: lang for n, (lang, _) in blocks.items()} == EXPECTED, PENDING


def test_marker_parsing() -> None:
    """The parser itself, on a README of its own (so it is tested whatever README.md says)."""
    text = "# t\n<!-- readme-test: a -->\n```bash\necho 1\n```\n```python\nx = 1\n```\n"
    assert marked_blocks(text) == {"a": ("bash", "echo 1\n")}
    with pytest.raises(AssertionError, match="not right before"):
        marked_blocks("<!-- readme-test: a -->\n\n```bash\necho\n```\n")
    assert aimed_at("curl -s localhost:8000/x http://127.0.0.1:8000/y", "http://h:1") == (
        "curl -s h:1/x http://h:1/y"
    )
    claimed('print("mse", m)  # ~4e-8\n', "3.7e-08")
    with pytest.raises(AssertionError, match="the README says"):
        claimed('print("mse", m)  # ~1e-4\n', "3.7e-08")


def test_curl_quick_start(server: str, tmp_path: Path) -> None:
    assert shutil.which("curl"), "the README's curl example needs curl (apt-get install curl)"
    code = aimed_at(block("curl"), server)
    r = subprocess.run(
        ["bash", "-e", "-u", "-o", "pipefail", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    # the last thing printed is the step's answer, as the block's `# ->` comment says
    last = r.stdout.strip().splitlines()[-1]
    answer = json.loads(last[last.index("{") :])
    assert (answer["version"], answer["step"], answer["lr"]) == (1, 1, 0.1), answer
    assert round(answer["grad_norm"], 2) == 1.15, answer
    assert answer["params"]["w"]["data"] == pytest.approx([-0.1, 0.1, -0.1], rel=1e-6)


@pytest.mark.parametrize("name", ["httpx", "python-sdk"])
def test_python_example(server: str, tmp_path: Path, name: str) -> None:
    code = block(name)
    script = tmp_path / f"readme_{name.replace('-', '_')}.py"  # not httpx.py: it shadows httpx
    script.write_text(aimed_at(code, server))
    r = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    m = re.search(r"^mse (\S+)$", r.stdout, re.M)
    assert m, f"the example prints `mse <number>`:\n{r.stdout}"
    assert float(m.group(1)) < 1e-6, r.stdout  # the regression is solved
    claimed(code, m.group(1))
