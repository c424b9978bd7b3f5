"""One keel call: its state from the first attempt to the end, the records it writes, and how it ends.

A `Call` is made per call (`CallSettings.begin`) and set as `CURRENT_CALL` while the SDK works, so the
attempt middleware (`keel._middleware`) records each HTTP attempt on it. The call then ends in exactly one of:
`succeeded` (a `Reply`), `finished` (a call that is not a message), `failed` (a `CallFailed` to raise) or
`abandoned` (a stream its caller left early) — each writes the call record.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx2
from anthropic._request import APIRequest
from anthropic.types import Message

from ._continuation import combine
from ._error_map import by_name, classify, classify_exception
from ._exceptions import CALL_ERRORS, CallFailed, DeadlineExceeded, Failure, Refused, failure_of
from ._modes import Mode
from ._pacing import Pacing
from ._pricing import PriceTable, load_prices
from ._records import AttemptRecord, CallRecord, DeferredCallRecord, Recorder
from ._retrying import Deadline, RetryPolicy, policy_named
from ._stop import Outcome, outcome_kind, outcome_of
from ._usage import Usage
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ._telemetry import Telemetry

CURRENT_CALL: ContextVar[Call | None] = ContextVar("keel_call", default=None)
"""The keel call in progress in this context: what the middleware records each attempt on."""


class _CallIds:
    """Call ids unique across processes without a system call per call: a random per-process prefix and a
    counter. A forked child draws its own prefix, so parent and child never hand out the same id."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = "call_" + secrets.token_hex(6)
        self.counter = itertools.count(1)  # next() on a count is atomic under the GIL: safe across threads

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):06x}"


new_call_id = _CallIds().new


class Reply:
    """A successful call: the SDK's message, keel's outcome and the call record.

    The outcome and the call record are built when first read (or, for the record, when the records file is
    written), so a caller who reads only the message does not pay for them on the call's own path.

    Attributes:
        message: the SDK's own `Message` (for a continued or resumed call, its rounds made into one).
        outcome: the stop_reason as a `keel.Outcome` to match on.
        record: the `CallRecord`.
        request_id: the request_id of the response that ended the call.
        text: the message's text.
        cost_usd: what the call cost, None for a model without a known price.
    """

    __slots__ = ("_outcome", "_record", "message")

    def __init__(self, message: Message, record: CallRecord | DeferredCallRecord) -> None:
        self.message = message
        self._record = record
        self._outcome: Outcome | None = None

    @property
    def record(self) -> CallRecord:
        record = self._record
        return record.get() if isinstance(record, DeferredCallRecord) else record

    @property
    def outcome(self) -> Outcome:
        if self._outcome is None:
            self._outcome = outcome_of(self.message)
        return self._outcome

    @property
    def request_id(self) -> str | None:
        return self.record.request_id

    @property
    def text(self) -> str:
        return self.outcome.text

    @property
    def cost_usd(self) -> float | None:
        return self.record.cost_usd

    def __repr__(self) -> str:
        return f"Reply(message={self.message!r}, outcome={self.outcome!r}, record={self.record!r})"


class CallSettings:
    """What every call of one client shares: the default policy, where records go, prices, content logging."""

    def __init__(
        self,
        policy: str | RetryPolicy,
        records: str | Path | Recorder | None,
        prices: PriceTable | None,
        log_content: bool,
        limiter: RateLimiter | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.policy = policy_named(policy)
        self.limiter = limiter
        self.telemetry = telemetry
        self.owns_recorder = not isinstance(records, Recorder)  # a Recorder passed in may be shared: not ours to close
        self.recorder = records if isinstance(records, Recorder) else Recorder(records)
        self.prices = prices or load_prices()
        self.log_content = log_content

    def begin(
        self,
        policy: str | RetryPolicy | None,
        mode: Mode,
        params: Mapping[str, Any],
        name: str | None = None,
    ) -> Call:
        """A new call under `policy` (None: the client's), made in `mode` with `params`; `name` names a call that
        is not a message (e.g. "messages.count_tokens")."""
        return Call(self, self.policy if policy is None else policy_named(policy), mode, params, name)

    def close(self) -> None:
        if self.owns_recorder:
            self.recorder.close()


class Call:
    """What one keel call has seen so far: its attempts, rounds and first-token time.

    A plain slotted class: one is made per call, on the hot path. A round is one request of the conversation
    (the first, a continuation, a resumed stream); whoever sends a round counts it (`start_round`).

    `with call:` is the call in progress: it is the current call (what the middleware records attempts on),
    and an exception in `CALL_ERRORS` leaving the block becomes the `CallFailed` that `failed` makes.

    With telemetry (`keel._telemetry`), `span` is the SDK's span of the API call in progress, found at each
    attempt, which keel's attributes go on; `outer` the span that was current when the call began (the caller's).
    """

    __slots__ = (
        "_token",
        "attempts",
        "call_id",
        "deadline",
        "held",
        "mode",
        "name",
        "outer",
        "pacing",
        "params",
        "policy",
        "retry_of",
        "rounds",
        "settings",
        "span",
        "started",
        "telemetry",
        "ttft_ms",
    )

    def __init__(
        self, settings: CallSettings, policy: RetryPolicy, mode: Mode, params: Mapping[str, Any], name: str | None
    ) -> None:
        self.call_id = new_call_id()
        self.settings = settings
        self.policy = policy
        self.mode = mode
        self.params = params
        self.name = name
        self.started = time.monotonic()
        self.deadline = None if policy.deadline is None else Deadline(policy, self.started)
        self.pacing = None if settings.limiter is None else Pacing(settings.limiter)
        self.attempts: list[AttemptRecord] = []
        self.held: list[AttemptRecord] = []  # successful attempts, written with the call record
        self.rounds = 0
        self.ttft_ms: float | None = None
        self.retry_of: str | None = None  # the error class of the last failed attempt: the next attempt retries it
        self.span: Span | None = None
        self.telemetry = telemetry = settings.telemetry
        self.outer = telemetry.current_span() if telemetry is not None else None

    def __enter__(self) -> Call:
        self._token = CURRENT_CALL.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        CURRENT_CALL.reset(self._token)
        del self._token  # it holds the context it was set in (an asyncio task's): not to be kept alive with the call
        if isinstance(exc, CALL_ERRORS):
            raise self.failed(exc) from exc

    @property
    def deadline_hit(self) -> bool:
        return self.deadline is not None and self.deadline.hit

    def start_round(self) -> None:
        self.rounds += 1
        span = self.span
        if span is not None and span.is_recording():  # a stream counts its round once its API call has begun
            span.set_attribute("keel.rounds", self.rounds)

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.monotonic() - self.started) * 1000

    # --- attempts (the middleware) -------------------------------------------------------------------

    def before_attempt(self) -> None:
        if self.deadline is not None:
            self.deadline.check()
        telemetry = self.telemetry
        if telemetry is not None:
            self.span = telemetry.sdk_span(self.outer)
            if self.retry_of is not None:
                telemetry.retried(self.retry_of, self.params.get("model"))
        self.retry_of = None

    def _attempt(
        self,
        request: APIRequest,
        started: float,
        request_id: str | None = None,
        status: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        error_class: str | None = None,
    ) -> AttemptRecord:
        record = AttemptRecord(
            self.call_id,
            len(self.attempts) + 1,
            request.retries_taken,
            request.options.url,
            request_id,
            status,
            error_type,
            error_code,
            error_class,
            (time.perf_counter() - started) * 1000,
        )
        self.attempts.append(record)
        if self.span is not None:
            self._annotate(self.span)
        return record

    def _annotate(self, span: Span) -> None:
        """The keel call's figures so far on the SDK's span of the API call in progress."""
        span.set_attribute("keel.call_id", self.call_id)
        span.set_attribute("keel.mode", self.mode)
        span.set_attribute("keel.attempts", len(self.attempts))
        span.set_attribute("keel.rounds", self.rounds)
        if self.pacing is not None:
            span.set_attribute("keel.rate_limit.wait_s", self.pacing.waited)

    def _failed_attempt(self, request: APIRequest, error_class: str, sdk_retries: bool) -> None:
        """An attempt failed with `error_class`: the next attempt, if any, retries it. When the SDK's loop will not
        (`sdk_retries`: whether it retries this error while retries are left), the error ends the API call, and
        its class goes on the SDK's span, which the SDK ends as it raises the error."""
        self.retry_of = error_class
        max_retries = request.max_retries if isinstance(request.max_retries, int) else self.policy.max_retries
        if self.span is not None and not (sdk_retries and request.retries_taken < max_retries):
            self.span.set_attribute("keel.error_class", error_class)

    def response_priced(self, message: object) -> None:
        """The cost of the API call's response on its span (a plain call's in the middleware, a stream's at its
        `message_stop`, both before the SDK ends the span)."""
        if self.span is not None and isinstance(message, Message) and self.span.is_recording():
            cost = self.settings.prices.cost(message.model, message.usage)
            if cost is not None:
                self.span.set_attribute("keel.cost_usd", cost)

    def attempt_succeeded(self, request: APIRequest, response: httpx2.Response, started: float) -> None:
        """A 2xx attempt: held, and written with the call record in one go (the common case, kept short)."""
        self.held.append(self._attempt(request, started, response.headers.get("request-id"), response.status_code))

    def attempt_failed(self, request: APIRequest, err: BaseException, started: float) -> None:
        """No response (a connection error or timeout): written at once, like every error."""
        error_class = classify_exception(err).name
        self.settings.recorder.emit(self._attempt(request, started, error_class=error_class))
        self._failed_attempt(request, error_class, True)  # the SDK retries every connection error

    def attempt_errored(self, request: APIRequest, response: httpx2.Response, body: bytes, started: float) -> None:
        """An error response: classified, written at once, and the SDK told whether it may retry (the SDK's own
        `x-should-retry` header: a spend cap, or a wait that would overrun the deadline, is not retried)."""
        error_type, error_code, message = _error_fields(body)
        error = classify(response.status_code, error_type, error_code, message)
        deadline = self.deadline
        if not error.retryable or (deadline is not None and not deadline.allows_retry_after(response.headers)):
            response.headers["x-should-retry"] = "false"
        request_id = response.headers.get("request-id")
        self.settings.recorder.emit(
            self._attempt(request, started, request_id, response.status_code, error_type, error_code, error.name)
        )
        should_retry = response.headers.get("x-should-retry")  # what the SDK's loop decides on, before the status
        self._failed_attempt(
            request, error.name, should_retry == "true" or (should_retry != "false" and error.sdk_retries)
        )

    # --- how the call ends ---------------------------------------------------------------------------

    def _last_request_id(self) -> str | None:
        return self.attempts[-1].request_id if self.attempts else None

    def _emit(self, record: CallRecord | DeferredCallRecord) -> None:
        """The call record, with the attempt records held until now, in one write."""
        held, self.held = self.held, []
        self.settings.recorder.emit(*held, record)
        if self.telemetry is not None and self.name is None:  # a message call (not a batch, a poll, a token count)
            self.telemetry.call_ended(record, self.params.get("model"))

    def _recovered(self) -> None:
        """A call that retried has succeeded: noticed on `keel.retrying` (checked on every success, rarely true)."""
        if len(self.attempts) > self.rounds:
            from ._retry_notices import recovered  # imports this module

            recovered(self)

    def succeeded(self, rounds: Sequence[Message], raise_on_refusal: bool = False) -> Reply:
        """The reply of a call whose rounds produced these messages, its record written; a refusal raises
        `Refused` when the caller asked."""
        message = combine(rounds)
        facts: dict[str, Any] = {
            "request_id": rounds[-1]._request_id or self._last_request_id(),
            "stop_reason": message.stop_reason,
            "outcome": outcome_kind(message.stop_reason),
            "usage": message.usage,
        }
        record: CallRecord | DeferredCallRecord
        if self.settings.log_content:  # the content quotes the caller's own data: recorded as it is now
            record = self._figures().record(message.model, content=_content(self.params, message), **facts)
        else:  # built (and priced) when first needed, the same record for every reader
            build = partial(self._figures().record, message.model, ended=time.monotonic(), at=time.time(), **facts)
            record = DeferredCallRecord(build)
        self._emit(record)
        self._recovered()
        reply = Reply(message, record)
        if raise_on_refusal and message.stop_reason == "refusal":
            raise Refused(reply)
        return reply

    def finished(self) -> None:
        """The record of an SDK call that is not a message (a batch submission, a poll, a token count)."""
        self._emit(self._figures().record("", request_id=self._last_request_id(), outcome=self.name))
        self._recovered()

    def abandoned(self, partial: Message | None) -> None:
        """The record of a stream its caller left before the end: what it had produced, as far as known."""
        if self.pacing is not None:
            self.pacing.settle(partial.usage if partial is not None else None)
        model = partial.model if partial is not None else str(self.params.get("model"))
        usage = partial.usage if partial is not None else None
        self._emit(self._figures().record(model, request_id=self._last_request_id(), outcome="abandoned", usage=usage))

    def failed(self, err: BaseException) -> CallFailed:
        """The `CallFailed` to raise for this exception (one of `CALL_ERRORS`), its record written."""
        failure = failure_of(err)
        if isinstance(err, DeadlineExceeded):
            failure = self._last_error(failure)
        if self.pacing is not None:  # a 2xx whose body did not end well: what it reported, if anything, was served
            self.pacing.settle(failure.partial.usage if failure.partial is not None else None)
        partial = failure.partial  # a stream broken after content: what it had produced is billed
        detail = f"{self.policy.name} deadline of {self.policy.deadline:g} s: {err}" if self.deadline_hit else str(err)
        record = self._figures().record(
            partial.model if partial is not None else str(self.params.get("model", "")),
            request_id=failure.request_id or self._last_request_id(),
            outcome=self.name,
            usage=partial.usage if partial is not None else None,
            error_class=failure.error_class.name,
            error=detail,
            content=_content(self.params, None) if self.settings.log_content else None,
        )
        self._emit(record)
        return CallFailed(failure.error_class, record, failure.sdk_error, deadline_exceeded=self.deadline_hit)

    def _last_error(self, failure: Failure) -> Failure:
        """A deadline that ran out between attempts ended the call: the error it reports is the last attempt's (the
        one that was being retried), with that attempt's request_id."""
        for attempt in reversed(self.attempts):
            if attempt.error_class is not None:
                return replace(failure, error_class=by_name(attempt.error_class), request_id=attempt.request_id)
        return failure

    def _figures(self) -> _CallFigures:
        """What a call record takes from this call, as of now."""
        prices, policy, attempts = self.settings.prices, self.policy.name, len(self.attempts)
        return _CallFigures(prices, self.call_id, self.mode, policy, self.started, self.ttft_ms, attempts, self.rounds)


class _CallFigures(NamedTuple):
    """A call's figures for its record: a deferred record holds these, not the call (a reply may be kept long,
    and the less it keeps alive, the less the garbage collector has to walk)."""

    prices: PriceTable
    call_id: str
    mode: Mode
    policy: str
    started: float
    ttft_ms: float | None
    attempts: int
    rounds: int

    def record(
        self,
        model: str,
        *,
        request_id: str | None,
        stop_reason: str | None = None,
        outcome: str | None = None,
        usage: Any = None,
        error_class: str | None = None,
        error: str | None = None,
        content: dict[str, Any] | None = None,
        ended: float | None = None,
        at: float | None = None,
    ) -> CallRecord:
        """One call record; `usage` is the SDK's usage object (priced here), None when there is none.

        `ended` (monotonic) and `at` (wall clock) say when the call ended, for a record built after the fact
        from a finished call's figures; by default, now.
        """
        rounds = max(1, self.rounds)
        attempts = self.attempts
        if usage is None:
            counts, cost = Usage(), None
        else:
            counts = Usage.of(usage)
            cost = self.prices.cost(model, counts)
        return CallRecord(  # positional: one per call, on the hot path (field order as CallRecord declares it)
            self.call_id,
            self.mode,
            self.policy,
            model,
            request_id,
            stop_reason,
            outcome,
            counts,
            cost,
            ((time.monotonic() if ended is None else ended) - self.started) * 1000,
            self.ttft_ms,
            attempts,
            attempts - rounds if attempts > rounds else 0,
            rounds,
            error_class,
            error,
            content,
            time.time() if at is None else at,
        )


def _content(params: Mapping[str, Any], message: Message | None) -> dict[str, Any]:
    return {
        "system": params.get("system"),
        "messages": params.get("messages"),
        "response": message.model_dump(mode="json")["content"] if message else None,
    }


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = json.loads(body)
        error = data["error"]
        details = error.get("details") or {}
        return error.get("type"), details.get("error_code"), error.get("message")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, None
