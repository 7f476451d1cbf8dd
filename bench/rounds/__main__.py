"""`python -m bench.rounds`: see bench/rounds/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.rounds.run import main

if __name__ == "__main__":
    main()
