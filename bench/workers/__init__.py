"""Many workers on one optimizer and on their own (`python -m bench.workers`): steps/s,
latency and work lost to conflicts, async and sync, 1 and 2 API processes."""
