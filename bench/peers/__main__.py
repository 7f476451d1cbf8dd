"""`python -m bench.peers`: see bench/peers/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.peers.run import main

if __name__ == "__main__":
    main()
