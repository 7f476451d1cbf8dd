"""Fault recovery: how soon a keyed step is acknowledged again after a fault (run.py)."""
