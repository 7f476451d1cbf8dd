"""`python -m bench.cluster`: see bench/cluster/run.py for what it measures and its flags."""

from __future__ import annotations

from bench.cluster.run import main

if __name__ == "__main__":
    main()
