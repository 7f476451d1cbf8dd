"""`python -m bench` (from the repository root): optd against a Ray actor parameter server,
a naive JSON server and floors - the same as `python -m bench.peers` (bench/peers/run.py);
`--quick` for the CI smoke run. bench/README.md lists every benchmark."""

from __future__ import annotations

from bench.peers.run import main

if __name__ == "__main__":
    main()
