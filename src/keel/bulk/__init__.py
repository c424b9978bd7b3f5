"""Bulk real-time runs, for work that cannot wait for a batch: `AsyncClient.map(...)` in code, `keel run` (or a
`BulkRunner`) for a file of requests, resumable through a run ledger, within a budget. See docs/bulk.md."""

from .engine import Result
from .ledger import RUN_LEDGERS, RunLedger, RunTotals, SQLRunLedger
from .runner import BulkOptions, BulkProgress, BulkRunner, preflight, run_id_for

__all__ = [
    "RUN_LEDGERS",
    "BulkOptions",
    "BulkProgress",
    "BulkRunner",
    "Result",
    "RunLedger",
    "RunTotals",
    "SQLRunLedger",
    "preflight",
    "run_id_for",
]
