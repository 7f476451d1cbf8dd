"""Sharded sessions: one big session on more than one API process (bench/shards/run.py)."""
