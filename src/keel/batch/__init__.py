"""Message Batches, durable and resumable: `keel batch run prompts.jsonl --out results.jsonl`.

The ledger is a SQLite file by default (`SQLiteLedger`), or PostgreSQL (`keel.batch.postgres.PostgresLedger`,
needing the `postgres` extra) when `KEEL_DATABASE_URL` or keel.toml says so: `open_ledger()` chooses.
"""

from .._exceptions import AmbiguousSubmission, ForeignResults
from .backends import open_ledger
from .costs import ModelCost, cost_line, cost_report
from .inputs import Defaults, Item, Reject, read_items
from .jobs import Job
from .ledger import Ledger, Shard, SQLLedger
from .runner import BatchRunner, Progress, RunnerOptions, job_id_for, preflight, spent_usd
from .sqlite_ledger import SQLiteLedger

__all__ = [
    "AmbiguousSubmission",
    "BatchRunner",
    "Defaults",
    "ForeignResults",
    "Item",
    "Job",
    "Ledger",
    "ModelCost",
    "Progress",
    "Reject",
    "RunnerOptions",
    "SQLLedger",
    "SQLiteLedger",
    "Shard",
    "cost_line",
    "cost_report",
    "job_id_for",
    "open_ledger",
    "preflight",
    "read_items",
    "spent_usd",
]
