"""`python -m bench.service`: see bench/service/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.service.run import main

if __name__ == "__main__":
    main()
