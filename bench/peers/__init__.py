"""optd against its peers (`python -m bench` or `python -m bench.peers`): a Ray actor
parameter server, a naive JSON server and floors; writes `## Peers` and bench/scaling.png."""
