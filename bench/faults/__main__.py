"""`python -m bench.faults [--quick] [--write]`: see bench/faults/run.py."""

from __future__ import annotations

from bench.faults.run import main

if __name__ == "__main__":
    main()
