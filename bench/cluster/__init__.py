"""One Redis against a private 3-master Redis Cluster, with and without WAIT
(`python -m bench.cluster`)."""
