"""What a batch job cost, next to what the same work costs at standard prices."""

from __future__ import annotations

from dataclasses import dataclass

from .ledger import Ledger


@dataclass(frozen=True)
class ModelCost:
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    batch_usd: float | None  # None when the model has no known price
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
                input_tokens=row["input_tokens"] or 0,
                output_tokens=row["output_tokens"] or 0,
                cache_write_tokens=row["cache_write_tokens"] or 0,
                cache_read_tokens=row["cache_read_tokens"] or 0,
                batch_usd=row["cost_batch"] if priced else None,
                standard_usd=row["cost_standard"] if priced else None,
            )
        )
    return rows


def _usd(value: float | None) -> str:
    return "unknown price" if value is None else f"${value:,.6f}"


def cost_line(row: ModelCost) -> str:
    """One model's tokens and cost, batch next to standard, on one line."""
    return (
        f"{row.model}: {row.requests:,} requests, {row.input_tokens:,} input / {row.output_tokens:,} output tokens "
        f"(cache write {row.cache_write_tokens:,}, read {row.cache_read_tokens:,}) — batch {_usd(row.batch_usd)}, "
        f"standard {_usd(row.standard_usd)}, saved {_usd(row.saving_usd)}"
    )
