"""Bulk real-time runs, for work that cannot wait for a batch: `AsyncClient.map(...)` and `keel run`."""

from .engine import Result

__all__ = ["Result"]
