"""The bulk runner: input file → run ledger → real-time calls → results file, exactly one line per input line.

What `keel batch run` does for Message Batches, done with real-time calls for work that cannot wait: the same
input forms, rejects and results file, so a job can move between the two. Each item is marked "sending" in the
ledger before its request and "done" with its result after; running the same job again resumes it, and nothing
with a result is sent again. An item a kill left "sending" is sent again, at least once in all: its request may
have been served, so its worst case is counted as spent and a warning names it with the new request_id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .._budget import Budget, CostEstimate, estimate_cost
from .._call import Reply
from .._client import AsyncClient
from .._exceptions import BudgetExceeded, CallFailed
from .._pricing import PriceTable
from .._retrying import RetryPolicy
from ..batch.inputs import Defaults, Item, input_digest, read_items
from ..batch.jobs import estimate_left
from ..batch.leases import Heartbeat, RunnerId
from ..batch.outputs import write_results
from .engine import Result, completions
from .ledger import SQLRunLedger

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""The Messages API's limit on a request body."""

logger = logging.getLogger("keel.bulk")


@dataclass
class BulkOptions:
    """How a `BulkRunner` runs a job.

    Attributes:
        defaults: what input lines that do not say get (model, max_tokens, system).
        concurrency: requests in flight at most.
        budget_usd: the most the job may spend, earlier runs of it included, at standard prices; None for no ceiling.
        policy: every call's retry policy (by default "background": 429/529 storms are ridden out for minutes).
        lease_seconds: how long a runner's claim on a request lasts unless renewed (every third of it, while the
            runner lives); another runner sends again the requests of one killed once it has passed.
    """

    defaults: Defaults = field(default_factory=Defaults)
    concurrency: int = 8
    budget_usd: float | None = None
    policy: str | RetryPolicy = "background"
    lease_seconds: float = 60.0

    def fingerprint(self) -> dict[str, Any]:
        """What identifies a job besides its input (the defaults change the requests; concurrency and budget do
        not, so a run under a higher budget resumes the same job)."""
        return asdict(self.defaults)


@dataclass
class BulkProgress:
    """What a progress display is told at the start of a run and after each result.

    Attributes:
        job_id: the job.
        requests: its accepted requests.
        done: those with a result, earlier runs included.
        errored: those whose call failed.
        input_tokens: the prompt tokens of every result (cached or not).
        output_tokens: the output tokens of every result.
        cost_usd: what the job has spent, earlier runs included.
        done_before: the results earlier runs left (the rate counts this run's only).
        started: when this run started (`time.monotonic()`).
    """

    job_id: str
    requests: int
    done: int
    errored: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    done_before: int
    started: float = field(default_factory=time.monotonic)

    def add(self, result: Result[Item]) -> None:
        ended = result.reply or result.error
        assert ended is not None
        record = ended.record
        self.done += 1
        self.errored += result.error is not None
        self.input_tokens += record.usage.prompt_tokens
        self.output_tokens += record.usage.output_tokens
        self.cost_usd += record.cost_usd or 0.0

    @property
    def rate(self) -> float:
        """Results a second, in this run."""
        elapsed = time.monotonic() - self.started
        return (self.done - self.done_before) / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float | None:
        rate = self.rate
        return (self.requests - self.done) / rate if rate > 0 else None


def run_id_for(path: Path, options: BulkOptions) -> str:
    """The same input file with the same defaults is the same job: running it again resumes it."""
    return "run_" + input_digest(path, options.fingerprint())[:20]


def preflight(
    input_path: Path, options: BulkOptions, ledger: SQLRunLedger | None, prices: PriceTable | None = None
) -> CostEstimate:
    """What the job's requests still to send could cost, at standard prices: those left in the ledger, or (for a job
    not in it, or no ledger at all) every accepted line of the input. Reads only."""
    job_id = run_id_for(input_path, options)
    return estimate_left(ledger, job_id, input_path, options.defaults, MAX_REQUEST_BYTES, prices, batch=False)


class BulkRunner:
    """Runs (or resumes) a job: `await runner.run(input_path, out)`; see the module's docstring."""

    def __init__(
        self,
        client: AsyncClient,
        ledger: SQLRunLedger,
        options: BulkOptions | None = None,
        *,
        on_progress: Callable[[BulkProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.options = options or BulkOptions()
        self.on_progress = on_progress
        self.runner = RunnerId.here()
        """Who this runner is in the ledger's leases (host, pid and a token of its own)."""

    def preflight(self, input_path: Path) -> CostEstimate:
        return preflight(input_path, self.options, self.ledger, self.client.settings.prices)

    async def run(self, input_path: Path, out: Path, rejects: Path | None = None) -> str:
        """Run (or resume, or help run) the job for `input_path`; write the results file (and the rejects file); return
        the job id. When the next request could pass the budget, the calls in flight end, the results file is written
        (the requests not sent as "unsent") and `BudgetExceeded` is raised: run again with a higher budget to carry
        on."""
        options, ledger = self.options, self.ledger
        job_id = run_id_for(input_path, options)
        job = ledger.job(job_id) or ledger.create_job(job_id, str(input_path.resolve()), options.fingerprint())
        with Heartbeat(ledger, self.runner, job_id, options.lease_seconds) as heartbeat:
            for other in heartbeat.others:
                logger.info(
                    "%s: %s is on this job too: this runner sends the requests nobody holds, and waits for the rest",
                    job_id,
                    other.runner,
                )
            if job.status == "new":  # a no-op when another runner prepared the job first
                ledger.add_inputs(job_id, read_items(input_path, options.defaults, MAX_REQUEST_BYTES, ledger))
            ledger.set_job_status(job_id, "running")
            totals = ledger.totals(job_id)
            budget = None
            if options.budget_usd is not None:
                budget = Budget(options.budget_usd, self.client.settings.prices, spent_usd=totals.cost_usd)
            progress = BulkProgress(
                job_id,
                totals.requests,
                totals.done,
                totals.errored,
                totals.usage.prompt_tokens,
                totals.usage.output_tokens,
                totals.cost_usd,
                totals.done,
            )
            self._show(progress)
            try:
                await self._drive(job_id, progress, budget)
            except BudgetExceeded:
                self._finish(job_id, "stopped", out, rejects)
                raise
            except BaseException:  # Ctrl-C (the task canceled) or a failure: unless another runner drives the job
                if not ledger.runners(job_id, besides=self.runner.key):
                    ledger.set_job_status(job_id, "stopped")
                raise
        self._finish(job_id, "done", out, rejects)
        return job_id

    async def _drive(self, job_id: str, progress: BulkProgress, budget: Budget | None) -> None:
        """Send the requests this runner claims, a pass at a time, until none is left to send; between passes, wait
        for those other runners hold (theirs to send, or to take over once their leases expire)."""
        resent: set[str] = set()
        send = partial(self._send, job_id, resent)
        waiting_for = ""
        while True:
            claimed = self._claimed(job_id, resent, progress, budget)
            concurrency = self.options.concurrency
            async for result in completions(claimed, send, _params_json, concurrency=concurrency, budget=budget):
                progress.add(result)
                self._show(progress)
            counts = self.ledger.state_counts(job_id)
            if not (counts.get("pending") or counts.get("sending")):
                return
            held = self.ledger.holders(job_id)
            note = "; ".join(f"{runner} holds {count} request{'s' * (count > 1)}" for runner, count in held.items())
            if note and note != waiting_for:
                logger.info("%s: waiting: %s (taken over if its lease expires)", job_id, note)
            waiting_for = note
            await asyncio.sleep(self.options.lease_seconds / 3)

    def _show(self, progress: BulkProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    def _claimed(self, job_id: str, resent: set[str], progress: BulkProgress, budget: Budget | None) -> Iterator[Item]:
        """The items this runner claims, one at a time as the loop takes them. One a runner left "sending" (killed,
        or stopped with its request in flight) goes back to pending first, its worst case counted as spent."""
        while (claim := self.ledger.claim(job_id, self.runner.key, self.options.lease_seconds)) is not None:
            item, interrupted = claim
            if interrupted:
                worst = estimate_cost([item.params_json], self.client.settings.prices).high_usd
                self.ledger.requeue(job_id, item.custom_id, worst)
                progress.cost_usd += worst
                if budget is not None:
                    budget.add_spent(worst)
                resent.add(item.custom_id)
                logger.warning(
                    "%s: %s (line %d) was in flight when its runner stopped and may have been served: counted at its "
                    "worst case ($%.6f) and sent again",
                    job_id,
                    item.custom_id,
                    item.line,
                    worst,
                )
            yield item

    async def _send(self, job_id: str, resent: set[str], item: Item) -> Reply:
        """One item's request: "sending" before, "done" with its result after."""
        self.ledger.mark_sending(job_id, item.custom_id, self.runner.key, self.options.lease_seconds)
        try:
            reply = await self.client.messages.create(policy=self.options.policy, **json.loads(item.params_json))
        except CallFailed as failed:
            self.ledger.record_failure(job_id, item.custom_id, failed)
            if item.custom_id in resent:
                logger.warning("%s: %s sent again: request_id=%s", job_id, item.custom_id, failed.request_id)
            raise
        self.ledger.record_reply(job_id, item.custom_id, reply)
        if item.custom_id in resent:
            logger.warning("%s: %s sent again: request_id=%s", job_id, item.custom_id, reply.request_id)
        return reply

    def _finish(self, job_id: str, status: str, out: Path, rejects: Path | None) -> None:
        write_results(self.ledger.items_in_order(job_id), out, rejects, None)
        self.ledger.set_job_status(job_id, status)


def _params_json(item: Item) -> str:
    return item.params_json
