"""`python -m bench.workers`: see bench/workers/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.workers.run import main

if __name__ == "__main__":
    main()
