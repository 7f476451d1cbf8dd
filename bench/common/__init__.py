"""What every benchmark shares: processes, their clean-up and a keep-alive HTTP client
(harness), /metrics scraping and percentiles (metrics), the requests sent (slots), the closed
loop of many workers (load), RESULTS.md and report helpers (report), the floor servers (floors)
and the numpy Adam step the peers share (np_adam)."""
