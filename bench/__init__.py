"""optd's benchmarks, one package per question (peers, service, workers, cluster, optim) and
`common` for what they share; each runs as `python -m bench.<name>` from the repository root,
and `python -m bench` runs the peers comparison. See bench/README.md."""
