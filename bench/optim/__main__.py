"""`python -m bench.optim`: see bench/optim/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.optim.run import main

if __name__ == "__main__":
    main()
