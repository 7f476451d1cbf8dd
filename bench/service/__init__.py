"""optd's step latency and throughput against the echo and echo + Redis floors
(`python -m bench.service`), and where a small step's time goes (`python -m
bench.service.profile`)."""
