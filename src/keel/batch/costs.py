"""What a batch job cost, next to what the same work costs at standard prices."""

from __future__ import annotations

from dataclasses import dataclass

from .._usage import USAGE_FIELDS, Usage
from .ledger import Ledger


@dataclass(frozen=True)
class ModelCost:
    """What one model's succeeded requests in a batch job used and cost.

    Attributes:
        model: the model id.
        requests: succeeded requests of this model.
        usage: their tokens, summed.
        batch_usd: their cost at batch prices; None when the model has no known price.
        standard_usd: the same usage at standard prices; None when the model has no known price.
    """

    model: str
    requests: int
    usage: Usage
    batch_usd: float | None
    standard_usd: float | None

    @property
    def saving_usd(self) -> float | None:
        if self.batch_usd is None or self.standard_usd is None:
            return None
        return self.standard_usd - self.batch_usd


def cost_report(ledger: Ledger, job_id: str) -> list[ModelCost]:
    """Tokens and cost by model, of succeeded requests only: errored, canceled and expired ones are not billed."""
    rows = []
    for row in ledger.usage_by_model(job_id):
        priced = row["priced"] == row["requests"]
        rows.append(
            ModelCost(
                model=row["model"] or "?",
                requests=row["requests"],
                usage=Usage(*(row[name] or 0 for name in USAGE_FIELDS)),
                batch_usd=row["cost_batch"] if priced else None,
                standard_usd=row["cost_standard"] if priced else None,
            )
        )
    return rows


def _usd(value: float | None) -> str:
    return "unknown price" if value is None else f"${value:,.6f}"


def cost_line(row: ModelCost) -> str:
    """One model's tokens and cost, batch next to standard, on one line."""
    usage = row.usage
    return (
        f"{row.model}: {row.requests:,} requests, {usage.input_tokens:,} input / {usage.output_tokens:,} output tokens "
        f"(cache write {usage.cache_write_tokens:,}, read {usage.cache_read_tokens:,}) — batch {_usd(row.batch_usd)}, "
        f"standard {_usd(row.standard_usd)}, saved {_usd(row.saving_usd)}"
    )
