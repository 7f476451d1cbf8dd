"""Sync rounds: how many rounds a second 8 workers close on one small session (issue #18)."""
