"""Message Batches, durable and resumable: `keel batch run prompts.jsonl --out results.jsonl`."""

from .._exceptions import AmbiguousSubmission, ForeignResults
from .costs import ModelCost, cost_line, cost_report
from .inputs import Defaults, Item, Reject, read_items
from .jobs import Job
from .ledger import Ledger, Shard, SQLiteLedger
from .runner import BatchRunner, Progress, RunnerOptions, job_id_for, preflight, spent_usd

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
    "SQLiteLedger",
    "Shard",
    "cost_line",
    "cost_report",
    "job_id_for",
    "preflight",
    "read_items",
    "spent_usd",
]
