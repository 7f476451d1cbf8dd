"""`python -m bench` (from the repository root): optd against a Ray actor parameter server,
a naive JSON server and floors - bench/bench_peers.py; `--quick` for the CI smoke run.
bench/README.md lists every benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_peers import main  # noqa: E402

if __name__ == "__main__":
    main()
