"""Every exception keel raises, under one base class, and the one mapping from what a call raised to a report.

    KeelError
    ├── CallFailed                 a call produced no message (classified, with request_id and its record)
    ├── Refused                    the model refused, and the caller asked to be told by an exception
    ├── StreamInterrupted          a stream broke after content reached the caller
    ├── DeadlineExceeded           the interactive deadline ran out before another attempt could be made
    ├── PriceDataError (ValueError)          a prices file or override that cannot be used
    ├── AtMostOnceError            keel.tools: a dedup key whose tool must not simply run
    │   ├── ToolOutcomeUnknown
    │   ├── ToolWaitTimeout (TimeoutError)
    │   ├── ToolReplayedError
    │   └── ToolResultNotSerializable (TypeError)
    ├── StoreUnavailable (ConnectionError)   a shared store (Redis, PostgreSQL) cannot be reached
    ├── ConfigError (ValueError)             keel.toml or a store URL that cannot be used
    ├── AmbiguousSubmission (RuntimeError)   keel.batch: a lost create response matches several batches
    ├── ForeignResults (RuntimeError)        keel.batch: an adopted batch holds other custom_ids
    ├── ProxyConfigError (ValueError)        keel.proxy: a configuration the proxy cannot honour
    ├── LimiterError               keel.ratelimit: the request was not sent
    │   ├── LimitExceedsCapacity (ValueError)    a reservation no bucket could ever hold
    │   ├── AcquireTimeout (TimeoutError)        no room in the buckets within the timeout
    │   └── LimiterUnavailable (ConnectionError) the shared store cannot be reached
    ├── BudgetExceeded             a job stopped: its next request could pass its budget
    └── UnpricedModel (LookupError)          a budget cannot bound the cost of a model without a price

Errors of the emulator (`keel.emulator`), which depends on nothing else in keel, are its own.

`failure_of()` is the one place that reads an exception caught on a call's path and says what the call
record and `CallFailed` report: the error class, the SDK's own exception, the request_id and any partial
message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import anthropic
from anthropic.types import Message

from ._error_map import (
    LIMITER_UNAVAILABLE,
    OVER_RATE_LIMIT,
    PACING_TIMEOUT,
    ErrorClass,
    classify_exception,
)

if TYPE_CHECKING:
    from ._call import Reply
    from ._records import CallRecord
    from .batch.ledger import Shard
    from .stores.base import ToolCallRecord


class KeelError(Exception):
    """Base of every exception keel raises (the emulator's own errors aside)."""


class CallFailed(KeelError):
    """A call that did not produce a message: every retry the policy allows was spent, or the error is one that
    must not be retried.

    Attributes:
        error_class: the row of the error map: whether and how to retry (`retryable`, `action`, `note`).
        record: the call's `CallRecord` (attempts, latency, request_id), as written to the records.
        sdk_error: the SDK's own exception (e.g. `anthropic.OverloadedError`), None when there was none.
        deadline_exceeded: True when the policy's deadline ended the retries, not the error itself.
        request_id: the request_id of the last response, None when no response arrived.
        status: the HTTP status of the SDK's error, None without one.
    """

    def __init__(
        self,
        error_class: ErrorClass,
        record: CallRecord,
        sdk_error: BaseException | None,
        *,
        deadline_exceeded: bool = False,
    ) -> None:
        self.error_class = error_class
        self.record = record
        self.sdk_error = sdk_error
        self.deadline_exceeded = deadline_exceeded
        self.request_id = record.request_id
        self.status = sdk_error.status_code if isinstance(sdk_error, anthropic.APIStatusError) else None
        detail = sdk_error.api_message if isinstance(sdk_error, anthropic.APIStatusError) else None
        detail = detail or (str(sdk_error) if sdk_error else "")
        deadline = " (the interactive deadline stopped further retries)" if deadline_exceeded else ""
        super().__init__(
            f"{error_class.label()} after {record.attempts} attempt(s){deadline}, request_id={record.request_id}: "
            f"{detail} — {error_class.note}"
        )


class Refused(KeelError):
    """A refusal (stop_reason `refusal`), raised when the caller passed `raise_on_refusal=True`; never retried.

    Attributes:
        reply: the whole `Reply` (message, outcome, record).
        category: `stop_details.category` (cyber, bio, ...), None when the API gave none.
        explanation: `stop_details.explanation`, None when the API gave none.
        request_id: the refused response's request_id.
    """

    def __init__(self, reply: Reply) -> None:
        from ._stop import Refusal

        self.reply = reply
        outcome = reply.outcome
        self.category = outcome.category if isinstance(outcome, Refusal) else None
        self.explanation = outcome.explanation if isinstance(outcome, Refusal) else None
        self.request_id = reply.request_id
        super().__init__(f"refused ({self.category}), request_id={self.request_id}: {self.explanation}")


class StreamInterrupted(KeelError):
    """A stream broke after content reached the caller (with `on_interrupt="raise"`, or when the resumes
    allowed were spent).

    Attributes:
        partial_text: the text the caller has seen.
        request_id: the broken response's request_id.
        error_class: what broke it (`mid_stream`, `stream_interrupted`, `connection`, ...).
        message: what the broken round had produced (billed), without a cut-off tool_use or thinking block.
    """

    def __init__(self, partial_text: str, request_id: str | None, error_class: ErrorClass, message: Message | None):
        self.partial_text = partial_text
        self.request_id = request_id
        self.error_class = error_class
        self.message = message
        super().__init__(
            f"stream interrupted after {len(partial_text)} characters, request_id={request_id}: {error_class.label()}"
        )


class DeadlineExceeded(KeelError):
    """The interactive deadline ran out before another attempt could be made. A call raises it as the cause of
    its `CallFailed` (`deadline_exceeded=True`)."""


class PriceDataError(KeelError, ValueError):
    """A prices file or an override that cannot be used.

    Attributes:
        source: the file (or "overrides") it came from.
        field: the field at fault (e.g. `models.claude-opus-5.input`), None for the file as a whole.
    """

    def __init__(self, source: str, field: str | None, reason: str) -> None:
        self.source = source
        self.field = field
        super().__init__(f"{source}: {field}: {reason}" if field else f"{source}: {reason}")


class AtMostOnceError(KeelError):
    """Base of `keel.tools`' errors: a dedup key whose tool must not simply run.

    Attributes:
        key: the dedup key.
        tool: the tool's name.
    """

    def __init__(self, message: str, *, key: str, tool: str) -> None:
        super().__init__(message)
        self.key = key
        self.tool = tool


class ToolOutcomeUnknown(AtMostOnceError):
    """A previous attempt claimed this call and then vanished (crash, kill, interrupt) without recording a
    result: the side effect may or may not have happened. Check, then `resolve` or `forget` the key, or
    run with `takeover=True` if running it again is acceptable.

    Attributes:
        record: the stored claim (owner, attempt, when it was claimed).
    """

    def __init__(self, record: ToolCallRecord) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.claimed_at))
        super().__init__(
            f"tool {record.tool!r} (key {record.key}): attempt {record.attempt} claimed at {when} by "
            f"{record.owner} never finished and its lease expired; the side effect may or may not have "
            "happened. Check, then resolve(key, value) or forget(key), or run with takeover=True.",
            key=record.key,
            tool=record.tool,
        )
        self.record = record


class ToolWaitTimeout(AtMostOnceError, TimeoutError):
    """Another caller holds the claim (and keeps its lease alive) and did not finish within `wait_timeout`.

    Attributes:
        record: the claim held elsewhere.
        waited: seconds waited.
    """

    def __init__(self, record: ToolCallRecord, waited: float) -> None:
        super().__init__(
            f"tool {record.tool!r} (key {record.key}): still running elsewhere ({record.owner}) after waiting "
            f"{waited:.1f}s; not running it here. Try again later or raise wait_timeout.",
            key=record.key,
            tool=record.tool,
        )
        self.record = record
        self.waited = waited


class ToolReplayedError(AtMostOnceError):
    """The call failed before and the failure was recorded (`store_errors=True`, or a result that could not
    be serialised): it is replayed, not retried.

    Attributes:
        record: the stored failure.
        error_type: the failure's exception type name.
        error_message: the failure's message.
    """

    def __init__(self, record: ToolCallRecord) -> None:
        try:
            data = json.loads(record.result_json or "{}")
            error_type, error_message = str(data["type"]), str(data["message"])
        except (ValueError, KeyError, TypeError):
            error_type, error_message = "Error", record.result_json or ""
        super().__init__(
            f"tool {record.tool!r} (key {record.key}) failed before and the failure was recorded: "
            f"{error_type}: {error_message}",
            key=record.key,
            tool=record.tool,
        )
        self.record = record
        self.error_type = error_type
        self.error_message = error_message


class ToolResultNotSerializable(AtMostOnceError, TypeError):
    """The tool ran but returned something JSON cannot hold. The key is recorded as failed (the side effect
    happened, so it must not run again); `forget(key)` after fixing the tool to allow a new run."""


class StoreUnavailable(KeelError, ConnectionError):
    """A shared store of keel's state (the at-most-once tool store on Redis, the batch ledger on PostgreSQL)
    cannot be reached: at start (a wrong address, the server is down, a wrong password), or mid-run for longer
    than keel keeps retrying. Nothing was done unrecorded: keel never falls back to a local store by itself.

    Attributes:
        store: which state it holds, e.g. "at-most-once tool store" or "batch ledger".
        url: the store's address, without its password.
        reason: what the client library said, secrets removed.
    """

    def __init__(self, store: str, url: str, reason: str) -> None:
        self.store = store
        self.url = url
        self.reason = reason
        super().__init__(f"{store} at {url} is unreachable: {reason}")


class ConfigError(KeelError, ValueError):
    """keel's configuration cannot be used: a `keel.toml` that is not valid TOML or holds an unknown or
    mistyped setting, or a store URL of a scheme keel does not know.

    Attributes:
        source: where the setting came from: the file's path, or the environment variable's name.
    """

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class AmbiguousSubmission(KeelError, RuntimeError):
    """A batch runner stopped while submitting a shard, and more than one batch matches it: it will not guess.

    Attributes:
        candidates: the ids of the matching batches; `keel batch adopt` takes the right one.
    """

    def __init__(self, job_id: str, shard: Shard, number: int, candidates: list[str]) -> None:
        """`number`: the shard's number within its job (1..n, as `keel batch status` shows it and `adopt` takes it)."""
        self.candidates = candidates
        super().__init__(
            f"shard {number} of job {job_id} ({shard.requests} requests) was being submitted when the runner "
            f"stopped, and {len(candidates)} batches match it: {', '.join(candidates)}. Check which holds this job's "
            f"custom_ids, then run: keel batch adopt {job_id} --shard {number} --batch-id <id>"
        )


class ForeignResults(KeelError, RuntimeError):
    """The results of an adopted batch do not hold the shard's custom_ids."""


class ProxyConfigError(KeelError, ValueError):
    """`keel proxy` was given what it cannot honour: an upstream that is not an http(s) URL, or a scenario whose
    rate limits or batch shares only the emulator can apply. Raised when the proxy is built, before it listens."""


class LimiterError(KeelError):
    """Base of the rate limiter's errors: the request was not sent. `error_class` is its row of the error map,
    what a call that fails with it reports."""

    error_class: ClassVar[ErrorClass]


class LimitExceedsCapacity(LimiterError, ValueError):
    """A reservation asks one rate-limit bucket for more than the bucket can ever hold (e.g. 300,000 input tokens
    against an input-token limit of 200,000 per minute). It could never be granted, so `acquire` raises at once
    instead of waiting forever. Fix the request: a smaller prompt, a lower `max_tokens`, or an exact input count
    in place of the estimate.

    Attributes:
        bucket: "requests", "input_tokens" or "output_tokens".
        amount: what was asked.
        capacity: the bucket's size when it was asked.
        model_class: the model class whose buckets were asked.
    """

    def __init__(self, bucket: str, amount: int, capacity: float, model_class: str) -> None:
        self.bucket = bucket
        self.amount = amount
        self.capacity = capacity
        self.model_class = model_class
        super().__init__(
            f"reservation of {amount:,} {bucket.replace('_', ' ')} exceeds the {model_class!r} bucket's capacity "
            f"of {capacity:,.0f}: it could never be granted"
        )


class AcquireTimeout(LimiterError, TimeoutError):
    """`acquire` reached its timeout before the reservation fitted (or while acquisitions were paused by a
    `retry-after`). Nothing was reserved.

    Attributes:
        model_class: the model class whose buckets were asked.
        timeout: the timeout, in seconds.
        wait: the limiter's last estimate, in seconds, of how much longer it would have had to wait.
    """

    def __init__(self, model_class: str, timeout: float, wait: float) -> None:
        self.model_class = model_class
        self.timeout = timeout
        self.wait = wait
        super().__init__(
            f"no room in the {model_class!r} rate-limit buckets within {timeout:g} s (about {wait:.3g} s more needed)"
        )


class LimiterUnavailable(LimiterError, ConnectionError):
    """The rate limiter's shared store cannot be reached: at start (the address is wrong, the server is down), or
    mid-run for longer than the limiter keeps retrying. The limiter fails closed: it never grants a reservation
    it could not record.

    Attributes:
        url: the store's address, without its password.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"rate-limit store at {url} is unreachable: {reason}")


LimitExceedsCapacity.error_class = OVER_RATE_LIMIT
AcquireTimeout.error_class = PACING_TIMEOUT
LimiterUnavailable.error_class = LIMITER_UNAVAILABLE


class BudgetExceeded(KeelError):
    """A job stopped because its next request could pass its budget: the cost so far plus that request's worst
    case (estimated input + `max_tokens`) is over the ceiling. The calls in flight finished first; run the job
    again with a higher budget to carry on where it stopped.

    Attributes:
        limit_usd: the budget.
        spent_usd: what the job has spent (earlier runs of it included).
        left_usd: the budget less what was spent.
        next_usd: the worst case of the request that was not sent.
    """

    def __init__(self, limit_usd: float, spent_usd: float, next_usd: float) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.left_usd = limit_usd - spent_usd
        self.next_usd = next_usd
        super().__init__(
            f"stopped at the budget of ${limit_usd:,.6f}: ${spent_usd:,.6f} spent, ${self.left_usd:,.6f} left, and the "
            f"next request could cost up to ${next_usd:,.6f}; run again with a higher budget to carry on"
        )


class UnpricedModel(KeelError, LookupError):
    """A budget (or a cost estimate) met a model that keel's price table does not know, so it cannot bound what
    the request costs. Add the model's prices (`KEEL_PRICES_FILE`, `load_prices(overrides=...)`), or run without
    a budget.

    Attributes:
        model: the model id.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r}, so a budget cannot bound its cost: add its prices (KEEL_PRICES_FILE or "
            "load_prices(overrides=...)) or run without a budget"
        )


class BrokeBeforeContent(Exception):
    """Internal: a stream broke before any content reached the caller, so repeating it unchanged is safe. The
    stream retries it; it reaches `failure_of` only when those retries are spent."""

    def __init__(self, error_class: ErrorClass, cause: BaseException | None) -> None:
        super().__init__(error_class.label())
        self.error_class = error_class
        self.cause = cause


CALL_ERRORS: tuple[type[BaseException], ...] = (
    anthropic.AnthropicError,
    DeadlineExceeded,
    StreamInterrupted,
    BrokeBeforeContent,
    LimiterError,
    ValueError,  # the SDK's "streaming is required" guard
)
"""What a call's path catches and reports as a failed call; anything else propagates unchanged."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed call reports, read from the exception that ended it."""

    error_class: ErrorClass
    sdk_error: BaseException  # what `CallFailed.sdk_error` carries
    request_id: str | None  # None: take the last attempt's
    partial: Message | None  # what a broken stream had produced (billed)


def failure_of(err: BaseException) -> Failure:
    """The one mapping from an exception in `CALL_ERRORS` to what the call reports."""
    if isinstance(err, StreamInterrupted):
        return Failure(err.error_class, err, err.request_id, err.message)
    if isinstance(err, BrokeBeforeContent):
        return Failure(err.error_class, err.cause or err, None, None)
    if isinstance(err, LimiterError):
        return Failure(err.error_class, err, None, None)
    request_id = err.request_id if isinstance(err, anthropic.APIStatusError) else None
    return Failure(classify_exception(err), err, request_id, None)
