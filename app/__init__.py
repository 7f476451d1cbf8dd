"""optd: an optimizer-as-a-service (see DESIGN.md)."""

__version__ = "0.1.0"
