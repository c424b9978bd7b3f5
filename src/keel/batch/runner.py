"""The durable batch runner: input file → ledger → batches → results file, exactly one line per input.

Every step is recorded in the ledger before and after its API call, so the same command run again
resumes: a batch is never submitted twice, results are never lost, and a kill at any moment costs at most
a repeated poll or download. A create whose response was lost (killed between send and record) is
reconciled by listing recent batches and matching size and time; an ambiguous match stops the runner
with the candidates and the command that settles it.

Several runners may run one job at once, on one host or several sharing a ledger: each works on the shards it
holds a lease on (`keel.batch.leases`), helps by claiming shards nobody holds, and otherwise waits, saying for whom.
A runner killed with leases held is taken over once they expire.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
from anthropic.types.messages import MessageBatch

from .._budget import Budget, CostEstimate
from .._client import Client
from .._error_map import classify
from .._exceptions import AmbiguousSubmission, BudgetExceeded, ForeignResults, StoreUnavailable
from .._pricing import PriceTable, load_prices
from .._usage import Usage
from .inputs import Defaults, Item, Reject, input_digest, read_items
from .jobs import estimate_left
from .leases import Heartbeat, LeaseLost, RunnerId
from .ledger import ItemResult, Ledger, Shard
from .outputs import write_results

logger = logging.getLogger("keel.batch")

MAX_BATCH_REQUESTS = 100_000
COLLECT_TRIES = 3  # downloads of one shard's results when the ledger is lost while storing them
MAX_BATCH_BYTES = 256 * 1024 * 1024
RECONCILE_SKEW_SECONDS = 300.0
_IN_FLIGHT = ("submitting", "submitted", "ended")
_UNCOLLECTED = ("planned", *_IN_FLIGHT)
_PRICED_USAGES = 4096  # distinct (model, usage) pairs whose costs are kept while collecting results
# `json.dumps(data, separators=…)` builds an encoder on every call; this one is built once.
# It writes what `json.dumps` does: parsed JSON cannot be circular, so the check for it is left out.
_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False)  # how a result's message is stored


@dataclass
class RunnerOptions:
    """How a `BatchRunner` runs a job.

    Attributes:
        defaults: what input lines that do not say get (model, max_tokens, system).
        max_attempts: submissions of one request at most (retryable errors and expired requests go round again).
        shard_requests: requests per batch at most (the API's limit: 100,000).
        shard_bytes: bytes per batch body at most (the API's limit: 256 MB).
        poll_min: seconds between polls, at first.
        poll_max: seconds between polls, at most (the interval grows while nothing changes).
        budget_usd: the most the job may spend at batch prices, earlier runs included: a shard is submitted only when
            its worst case fits (None: no ceiling). Not part of the job's identity: a higher budget resumes the job.
        lease_seconds: how long a runner's claim on a shard lasts unless renewed (it is renewed every third of it
            while the runner lives); a killed runner's shards are taken over by another runner once it has passed.
    """

    defaults: Defaults = field(default_factory=Defaults)
    max_attempts: int = 3
    shard_requests: int = MAX_BATCH_REQUESTS
    shard_bytes: int = MAX_BATCH_BYTES
    poll_min: float = 1.0
    poll_max: float = 60.0
    budget_usd: float | None = None
    lease_seconds: float = 60.0

    def fingerprint(self) -> dict[str, Any]:
        """What identifies a job besides its input (the defaults change the requests)."""
        d = self.defaults
        return {"model": d.model, "max_tokens": d.max_tokens, "system": d.system}


@dataclass
class Progress:
    """What a progress display is told after each poll.

    Attributes:
        job_id: the job.
        shards: its shards, as the ledger holds them now.
        started: when the run started (`time.monotonic()`).
    """

    job_id: str
    shards: list[Shard]
    started: float

    @property
    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for shard in self.shards:
            for name, value in shard.counts.items():
                total[name] = total.get(name, 0) + value
        return total

    @property
    def requests(self) -> int:
        return sum(shard.requests for shard in self.shards)

    def eta_seconds(self) -> float | None:
        done = self.requests - self.counts.get("processing", self.requests)
        if done <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (self.requests - done) / done


def job_id_for(path: Path, options: RunnerOptions) -> str:
    """The same input file with the same defaults is the same job: running it again resumes it."""
    return "job_" + input_digest(path, options.fingerprint())[:20]


def preflight(
    input_path: Path, options: RunnerOptions, ledger: Ledger | None, prices: PriceTable | None = None
) -> CostEstimate:
    """What the job's requests not finished yet could cost, at batch prices: those open in the ledger, or (for a job
    not in it, or no ledger at all) every accepted line of the input. Reads only."""
    job_id = job_id_for(input_path, options)
    return estimate_left(ledger, job_id, input_path, options.defaults, options.shard_bytes, prices, batch=True)


def spent_usd(ledger: Ledger, job_id: str) -> float:
    """What a job's succeeded requests cost at batch prices (the others are not billed)."""
    return sum(row["cost_batch"] or 0.0 for row in ledger.usage_by_model(job_id))


class BatchRunner:
    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        options: RunnerOptions | None = None,
        *,
        prices: PriceTable | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.options = options or RunnerOptions()
        self.prices = prices or load_prices()
        self.on_progress = on_progress
        self.sleep = sleep
        self.runner = RunnerId.here()
        """Who this runner is in the ledger's leases (host, pid and a token of its own)."""
        self._priced: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        self._worst: dict[int, Decimal] = {}  # shard -> its worst case for the budget (its requests never change)
        self._waiting_for = ""  # the last "waiting for" note, said once

    # --- the whole job -----------------------------------------------------------------------------

    def preflight(self, input_path: Path) -> CostEstimate:
        return preflight(input_path, self.options, self.ledger, self.prices)

    def run(self, input_path: Path, out: Path, rejects: Path | None = None, failures: Path | None = None) -> str:
        """Run (or resume, or help run) the job for `input_path`; write the results file; return the job id.

        With a budget, when the next shard's worst case could pass it and no batch is in flight, the results file is
        written (the requests not submitted as "unsent") and `BudgetExceeded` is raised: run again with a higher
        budget to carry on.
        """
        job_id = job_id_for(input_path, self.options)
        job = self.ledger.job(job_id) or self.ledger.create_job(
            job_id, str(input_path.resolve()), self.options.fingerprint()
        )
        with Heartbeat(self.ledger, self.runner, job_id, self.options.lease_seconds) as heartbeat:
            for other in heartbeat.others:
                logger.info(
                    "%s: %s is on this job too: this runner takes the shards nobody holds, and waits for the rest",
                    job_id,
                    other.runner,
                )
            if job.status == "new":
                inputs = _Inputs(input_path, self.options.defaults, self.options.shard_bytes, self)
                self.ledger.add_inputs(job_id, inputs)  # a no-op when another runner prepared the job first
            if job.status in ("new", "stopped"):
                self.ledger.set_job_status(job_id, "running")
            try:
                self.drive(job_id)
            except BudgetExceeded:
                self.write_outputs(job_id, out, rejects, failures)
                self.ledger.set_job_status(job_id, "stopped")
                raise
            except BaseException:  # Ctrl-C or a failure: unless another runner drives the job, none does any more
                if self._status(job_id) == "running" and not self.ledger.runners(job_id, besides=self.runner.key):
                    self.ledger.set_job_status(job_id, "stopped")
                raise
        self.write_outputs(job_id, out, rejects, failures)
        canceled = self._status(job_id) in ("canceling", "canceled")
        self.ledger.set_job_status(job_id, "canceled" if canceled else "done")
        return job_id

    def _status(self, job_id: str) -> str | None:
        job = self.ledger.job(job_id)
        return job.status if job else None

    def drive(self, job_id: str) -> None:
        """Submit, poll and collect the shards this runner holds, claiming those nobody holds, until no shard is
        left in flight and no item is left to send (or the budget stops it: `BudgetExceeded`)."""
        started = time.monotonic()
        interval = self.options.poll_min
        while True:
            canceling = self._status(job_id) in ("canceling", "canceled")
            self.ledger.exhaust(job_id, self.options.max_attempts)
            if canceling:
                self.ledger.cancel_unsent(job_id)
            else:
                self.ledger.plan_shards(job_id, self.options.shard_requests, self.options.shard_bytes)
            took, refused = self._take(job_id, canceling)
            mine = self._mine(job_id, ("submitted",))
            changed = self._poll(mine)
            if mine and self.on_progress is not None:
                self.on_progress(Progress(job_id, self.ledger.shards(job_id), started))
            collected = False
            for shard in self._mine(job_id, ("ended",)):
                collected |= self.collect(shard)
            shards = self.ledger.shards(job_id)
            if _finished(shards, canceling) and not self.ledger.state_counts(job_id).get("pending"):
                return
            if took or collected:
                interval = self.options.poll_min
                continue
            if refused is not None and not any(s.state in _IN_FLIGHT for s in shards):
                raise self._exceeded(job_id, refused)  # nothing was in flight when it was refused: it will not fit
            interval = self.options.poll_min if changed else min(self.options.poll_max, interval * 1.5)
            if not any(shard.held_by(self.runner.key) for shard in shards):
                self._note_waiting(job_id, shards)
                interval = min(interval, self.options.lease_seconds / 2)  # to take over a lease soon after it expires
            self.sleep(interval)

    def _mine(self, job_id: str, states: tuple[str, ...]) -> list[Shard]:
        return [shard for shard in self.ledger.shards(job_id, states) if shard.held_by(self.runner.key)]

    def _take(self, job_id: str, canceling: bool) -> tuple[bool, Shard | None]:
        """Submit the planned (or half-submitted) shards this runner holds, claiming more that nobody holds, one at a
        time, while the budget admits them: shards other runners left first, planned ones last. Canceling, only
        batches in flight are claimed. Returns whether it claimed or submitted any, and the shard the budget
        refused (released for now)."""
        acted, refused = False, None
        budget = None if canceling else self._budget(job_id)
        tried: set[int] = set()
        while True:
            if not canceling:
                for shard in self._mine(job_id, ("planned", "submitting")):
                    if shard.shard_id in tried:
                        continue
                    tried.add(shard.shard_id)
                    if budget is not None and not budget.admit(shard):
                        self.ledger.release(shard.shard_id, self.runner.key)  # it waits for the batches in flight
                        refused = shard
                    else:
                        acted |= self.submit(job_id, shard)
            states = ("submitted", "ended") if canceling or refused else _UNCOLLECTED
            claimed = self.ledger.claim(job_id, self.runner.key, self.options.lease_seconds, states)
            if claimed is None:
                return acted, refused
            if claimed.lease_owner not in (None, self.runner.key) and claimed.state != "planned":
                acted = True
                logger.info(
                    "%s: taking over shard %d (%s) from %s, whose lease expired",
                    job_id,
                    shard_number(self.ledger.shards(job_id), claimed),
                    claimed.state,
                    RunnerId.parse(claimed.lease_owner),
                )

    def _note_waiting(self, job_id: str, shards: list[Shard]) -> None:
        """Say once which runners hold the shards this one waits for (numbered within the job)."""
        held: dict[str, list[int]] = {}
        for number, shard in enumerate(shards, 1):
            if shard.lease_owner is not None and shard.lease_left is not None and shard.lease_left > 0:
                held.setdefault(shard.lease_owner, []).append(number)
        note = "; ".join(
            f"{RunnerId.parse(owner)} holds shard{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
            for owner, ids in held.items()
        )
        if note and note != self._waiting_for:
            logger.info("%s: waiting: %s (taken over if its lease expires)", job_id, note)
        self._waiting_for = note

    def _budget(self, job_id: str) -> _ShardBudget | None:
        """The budget as the ledger has it now: what the job spent, and every shard in flight held at its worst
        case, whichever runner sent it."""
        if self.options.budget_usd is None:
            return None
        budget = Budget(self.options.budget_usd, self.prices, batch=True, spent_usd=spent_usd(self.ledger, job_id))
        return _ShardBudget(self.ledger, job_id, budget, self._worst)

    def _exceeded(self, job_id: str, shard: Shard) -> BudgetExceeded:
        budget = self._budget(job_id)
        assert budget is not None
        return budget.exceeded(shard)

    # --- submission ----------------------------------------------------------------------------------

    def submit(self, job_id: str, shard: Shard) -> bool:
        """Submit a shard (reconciling one a lost create left `submitting`), unless another runner holds it; whether
        it is submitted now."""
        if shard.state == "submitting":
            try:
                batch_id = self.reconcile(job_id, shard)
            except AmbiguousSubmission:
                if not self._others_submitting(job_id):
                    raise
                return False  # one of them may be another runner's create, recorded in a moment: try again later
            if batch_id is not None:
                self._submitted(shard, batch_id)
                return True
        if not self.ledger.mark_submitting(shard.shard_id, self.runner.key, self.options.lease_seconds):
            return False  # another runner holds it
        body = _Body(self.ledger, shard.shard_id)
        batch = self.client.call(
            "batches.create",
            lambda sdk: sdk.post(
                "/v1/messages/batches",
                cast_to=MessageBatch,
                content=body,
                options={"headers": {"content-type": "application/json"}},
            ),
            policy="background",
            mode="batch",
        )
        self._submitted(shard, batch.id)
        return True

    def _others_submitting(self, job_id: str) -> bool:
        """Whether a live runner is submitting one of the job's shards: a batch it created is not recorded yet."""
        return any(
            shard.state == "submitting" and shard.lease_owner != self.runner.key and (shard.lease_left or 0) > 0
            for shard in self.ledger.shards(job_id)
        )

    def _submitted(self, shard: Shard, batch_id: str) -> None:
        if not self.ledger.mark_submitted(shard.shard_id, batch_id, self.runner.key):
            logger.warning(
                "shard %d was taken over by another runner while this one submitted it (its lease expired "
                "meanwhile): batch %s, created for it, is not recorded and may repeat its requests; cancel it",
                shard.shard_id,
                batch_id,
            )

    def reconcile(self, job_id: str, shard: Shard) -> str | None:
        """The batch a lost create made, if one matches by size and time; None if none did."""
        known = self.ledger.known_batch_ids()
        since = (shard.submit_started_at or 0) - RECONCILE_SKEW_SECONDS

        def recent(sdk: anthropic.Anthropic) -> list[MessageBatch]:
            found = []
            for batch in sdk.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < since:
                    break
                found.append(batch)
            return found

        candidates = [
            batch.id
            for batch in self.client.call("batches.list", recent, policy="background", mode="batch")
            if batch.id not in known and sum(batch.request_counts.model_dump().values()) == shard.requests
        ]
        if len(candidates) > 1:
            raise AmbiguousSubmission(job_id, shard, shard_number(self.ledger.shards(job_id), shard), candidates)
        return candidates[0] if candidates else None

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        def cancel(sdk: anthropic.Anthropic) -> MessageBatch:
            return sdk.messages.batches.cancel(batch_id)

        return self.client.call("batches.cancel", cancel, policy="background", mode="batch")

    def adopt(self, shard_id: int, batch_id: str) -> None:
        """Settle an ambiguous submission by hand: this shard is that batch (checked when results arrive)."""
        self.ledger.mark_submitted(shard_id, batch_id)

    # --- polling ---------------------------------------------------------------------------------------

    def _poll(self, shards: list[Shard]) -> bool:
        """Retrieve each batch once and record its counts (and whether it ended); whether any changed."""
        changed = False
        for shard in shards:
            batch = self._retrieve(shard)
            counts = batch.request_counts.model_dump()
            ended = batch.processing_status == "ended"
            if counts != shard.counts or ended:
                changed = True
                self.ledger.update_counts(shard.shard_id, counts, ended)
        return changed

    def _retrieve(self, shard: Shard) -> MessageBatch:
        batch_id = shard.batch_id
        assert batch_id is not None

        def retrieve(sdk: anthropic.Anthropic) -> MessageBatch:
            return sdk.messages.batches.retrieve(batch_id)

        return self.client.call("batches.retrieve", retrieve, policy="background", mode="batch")

    # --- results ---------------------------------------------------------------------------------------

    def collect(self, shard: Shard) -> bool:
        """Download a shard's results (streamed), classify each, store them in one transaction; whether they were
        stored (not when another runner took the shard over meanwhile). A shared ledger lost while storing them
        (nothing stored: the transaction rolled back) gets them downloaded again, up to `COLLECT_TRIES` times in
        all."""
        tries_left = COLLECT_TRIES
        while True:
            tries_left -= 1
            try:
                self._collect(shard)
                return True
            except StoreUnavailable as lost:
                if not tries_left:
                    raise
                logger.warning("%s; shard %d's results were not stored: downloading them again", lost, shard.shard_id)
            except LeaseLost as taken:
                logger.info("%s: %s", shard.job_id, taken)
                return False

    def _collect(self, shard: Shard) -> None:
        assert shard.batch_id is not None
        batch_id = shard.batch_id
        ids = {custom_id: n for n, custom_id in enumerate(self.ledger.shard_custom_ids(shard.shard_id))}
        self._priced.clear()

        def download(sdk: anthropic.Anthropic) -> int:
            expected = _ShardIds(ids)
            with sdk.messages.batches.with_streaming_response.results(batch_id) as response:
                outcomes = self._outcomes(response.iter_lines(), expected, batch_id)
                return self.ledger.record_results(shard.shard_id, outcomes, self.runner.key)

        self.client.call("batches.results", download, policy="background", mode="batch")

    def _outcomes(self, lines: Iterator[str], expected: _ShardIds, batch_id: str) -> Iterator[ItemResult]:
        for line in lines:
            if not line.strip():
                continue
            data = json.loads(line)
            custom_id = data["custom_id"]
            if not expected.see(custom_id):
                raise ForeignResults(
                    f"batch {batch_id} returned custom_id {custom_id!r}, which is not in this shard: "
                    "it is not this shard's batch (adopt the right one with keel batch adopt)"
                )
            yield self._outcome(custom_id, data["result"])
        for custom_id in expected.unseen():  # never seen in the results: send it again
            yield ItemResult(custom_id, "pending", "missing", error_message="missing from the batch results")

    def _outcome(self, custom_id: str, result: dict[str, Any]) -> ItemResult:
        kind = result["type"]
        if kind == "succeeded":
            message = result["message"]
            usage = message.get("usage") or {}
            model = message.get("model")
            cost_batch, cost_standard = self._costs(model, usage) if model else (None, None)
            return ItemResult(
                custom_id,
                "succeeded",
                kind,
                stop_reason=message.get("stop_reason"),
                model=model,
                usage=Usage.of(usage),
                cost_batch=cost_batch,
                cost_standard=cost_standard,
                message_json=_COMPACT.encode(message),
            )
        if kind == "errored":
            error = (result.get("error") or {}).get("error") or {}
            error_type = error.get("type")
            retry = classify(None, error_type).retryable
            return ItemResult(
                custom_id,
                "pending" if retry else "errored",
                kind,
                error_type=error_type,
                error_message=error.get("message"),
            )
        if kind == "expired":
            return ItemResult(custom_id, "pending", kind, error_message="the batch expired before this request ran")
        return ItemResult(custom_id, "canceled", kind)

    def _costs(self, model: str, usage: dict[str, Any]) -> tuple[float | None, float | None]:
        """(batch cost, standard cost) of a result's usage. Results repeat the same few usages, so each distinct
        one is priced once per download (keyed by its repr: equal reprs of parsed JSON are equal values)."""
        key = (model, repr(usage))
        costs = self._priced.get(key)
        if costs is None:
            if len(self._priced) >= _PRICED_USAGES:
                self._priced.clear()
            costs = (self.prices.cost(model, usage, batch=True), self.prices.cost(model, usage))
            self._priced[key] = costs
        return costs

    # --- outputs ---------------------------------------------------------------------------------------

    def write_outputs(self, job_id: str, out: Path, rejects: Path | None, failures: Path | None) -> None:
        """The results file (one line per input line, in input order), and the rejects and failures files.

        Each is written to a temporary file and renamed, so a kill never leaves half a file behind.
        """
        write_results(self.ledger.items_in_order(job_id), out, rejects, failures)


class _ShardBudget:
    """A batch job's budget, by shard, as the ledger has it at one moment: every shard in flight (whichever runner
    sent it, earlier runs included) is held at its worst case (each request's estimated input and all of its
    max_tokens, at batch prices) until its results are collected, when what its succeeded requests cost is counted
    as spent instead. `worst` keeps each shard's worst case from one moment to the next."""

    def __init__(self, ledger: Ledger, job_id: str, budget: Budget, worst: dict[int, Decimal]) -> None:
        self.ledger = ledger
        self.budget = budget
        self.worst = worst
        self.held: set[int] = set()
        for shard in ledger.shards(job_id, _IN_FLIGHT):
            budget.reserve_usd(self.worst_case(shard), force=True)
            self.held.add(shard.shard_id)

    def worst_case(self, shard: Shard) -> Decimal:
        usd = self.worst.get(shard.shard_id)
        if usd is None:
            params = self.ledger.shard_params(shard.shard_id)
            usd = self.worst[shard.shard_id] = sum((self.budget.worst_case_for(p) for p in params), Decimal(0))
        return usd

    def admit(self, shard: Shard) -> bool:
        """Whether the shard may be submitted: its worst case is held (now, or already)."""
        if shard.shard_id not in self.held:
            if self.budget.reserve_usd(self.worst_case(shard)) is None:
                return False
            self.held.add(shard.shard_id)
        return True

    def exceeded(self, shard: Shard) -> BudgetExceeded:
        return self.budget.exceeded(self.worst_case(shard))


def shard_number(shards: list[Shard], shard: Shard) -> int:
    """A shard's number within its job (1..n, as `keel batch status` shows it and `adopt` takes it), from the job's
    shards."""
    return [each.shard_id for each in shards].index(shard.shard_id) + 1


def _finished(shards: list[Shard], canceling: bool) -> bool:
    """Whether no shard is left to submit or in flight (canceling: in flight; the rest is not submitted)."""
    left = _IN_FLIGHT[1:] if canceling else _UNCOLLECTED
    return not any(shard.state in left for shard in shards)


class _ShardIds:
    """A shard's custom_ids (each with its number) and which of them its results held so far, one byte each.

    Two sets, the ids and those seen (the latter holding its own copy of every id, parsed from the results),
    took twice the memory for a 100,000-request shard.
    """

    def __init__(self, ids: dict[str, int]) -> None:
        self.ids = ids
        self.seen = bytearray(len(ids))

    def see(self, custom_id: Any) -> bool:
        """Mark `custom_id` seen; False if it is not one of the shard's."""
        number = self.ids.get(custom_id)
        if number is None:
            return False
        self.seen[number] = 1
        return True

    def unseen(self) -> Iterator[str]:
        """The ids not seen."""
        return (custom_id for custom_id, number in self.ids.items() if not self.seen[number])


class _Inputs:
    """A job's input lines, read afresh from the file each time they are iterated: a shared ledger that lost its
    connection while recording them can then record them all again."""

    def __init__(self, path: Path, defaults: Defaults, max_bytes: int, runner: BatchRunner) -> None:
        self.path, self.defaults, self.max_bytes, self.runner = path, defaults, max_bytes, runner

    def __iter__(self) -> Iterator[Item | Reject]:
        return read_items(self.path, self.defaults, self.max_bytes, self.runner.ledger)


class _Body:
    """A shard's create body that can be sent again: each iteration reads it afresh from the ledger."""

    def __init__(self, ledger: Ledger, shard_id: int) -> None:
        self.ledger = ledger
        self.shard_id = shard_id

    def __iter__(self) -> Iterator[bytes]:
        return self.ledger.shard_body(self.shard_id)
