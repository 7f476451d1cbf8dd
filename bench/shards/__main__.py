"""`python -m bench.shards`: see bench/shards/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.shards.run import main

if __name__ == "__main__":
    main()
