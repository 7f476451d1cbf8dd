"""`python -m bench.diloco`: see bench/diloco/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.diloco.run import main

if __name__ == "__main__":
    main()
