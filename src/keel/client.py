"""`keel.Client` / `keel.AsyncClient`: the SDK's calls, with classified retries, records and outcomes.

    client = keel.Client()                     # reads ANTHROPIC_API_KEY like the SDK, or Client(anthropic_client)
    reply = client.messages.create(model=..., max_tokens=..., messages=[...])
    reply.message      # the SDK's own Message
    reply.outcome      # keel.stop outcome: EndTurn, MaxTokens, ToolUse, Refusal, ...
    reply.record       # the CallRecord: request_id, usage, cost, latency, attempts

A failed call raises `CallFailed` (classification, request_id, attempts; `.sdk_error` is the SDK's
typed exception). The SDK's own retry loop makes the HTTP attempts; keel adds the policy around it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

import anthropic
from anthropic.types import Message
from anthropic.types import Usage as SdkUsage
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_delay

from .calls import CURRENT_CALL, AttemptMiddleware, CallState, DeadlineExceeded
from .calls import retry_after_seconds as _retry_after
from .errors import ErrorClass, classify_exception
from .modes import NONSTREAMING_MAX_TOKENS
from .policy import INTERACTIVE, RetryPolicy, policy_named
from .pricing import PriceTable, load_prices, token_counts
from .records import CallRecord, DeferredCallRecord, Mode, Recorder, Usage
from .stop import (
    MaxTokens,
    Outcome,
    PauseTurn,
    Refusal,
    continuation_messages,
    outcome_kind,
    outcome_of,
    resume_messages,
    stitch,
    supports_prefill,
)
from .stop import text_of as message_text
from .streaming import STREAM_FAILURES, AsyncResilientStream, OnInterrupt, ResilientStream

T = TypeVar("T")
CallMode = Literal["standard", "stream", "auto"]


class Reply:
    """A successful call: the SDK's message, keel's outcome and the call record.

    The outcome and the call record are built when first read (or, for the record, when the records file is
    written), so a caller who reads only the message does not pay for them on the call's own path.
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


class CallFailed(Exception):
    """A call that did not produce a message; `error_class` says whether and how to retry."""

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
        self.deadline_exceeded = deadline_exceeded  # the policy's deadline ended the retries, not the error itself
        self.request_id = record.request_id
        self.status: int | None = getattr(sdk_error, "status_code", None)
        detail = getattr(sdk_error, "api_message", None) or (str(sdk_error) if sdk_error else "")
        deadline = " (the interactive deadline stopped further retries)" if deadline_exceeded else ""
        super().__init__(
            f"{error_class.label()} after {record.attempts} attempt(s){deadline}, request_id={record.request_id}: "
            f"{detail} — {error_class.note}"
        )


class Refused(Exception):
    """Raised for a refusal when the caller asked (`raise_on_refusal=True`); never retried by keel."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        outcome = reply.outcome
        self.category = outcome.category if isinstance(outcome, Refusal) else None
        self.explanation = outcome.explanation if isinstance(outcome, Refusal) else None
        self.request_id = reply.request_id
        super().__init__(f"refused ({self.category}), request_id={self.request_id}: {self.explanation}")


def sum_usage(messages: Sequence[Message]) -> SdkUsage:
    first = messages[0].usage
    if len(messages) == 1:
        return first
    return first.model_copy(
        update={
            "input_tokens": sum(m.usage.input_tokens for m in messages),
            "output_tokens": sum(m.usage.output_tokens for m in messages),
            "cache_creation_input_tokens": sum(m.usage.cache_creation_input_tokens or 0 for m in messages),
            "cache_read_input_tokens": sum(m.usage.cache_read_input_tokens or 0 for m in messages),
        }
    )


def merge_continuation(done: Message, more: Message, sent_prefix: str | None) -> list[Any]:
    """Content of a truncated answer followed by its continuation, the text stitched into one block."""
    content = list(done.content)
    new = list(more.content)
    if content and new and content[-1].type == "text" and new[0].type == "text":
        seen = message_text(done)
        extra = stitch(seen, new[0].text, sent_prefix)
        content[-1] = content[-1].model_copy(update={"text": content[-1].text + extra})
        new = new[1:]
    return content + new


class _Core:
    """What the sync and async clients share: policy, records, prices, and building replies and failures."""

    def __init__(
        self,
        policy: str | RetryPolicy,
        records: str | Path | Recorder | None,
        prices: PriceTable | None,
        log_content: bool,
    ) -> None:
        self.policy = policy_named(policy)
        self.owns_recorder = not isinstance(records, Recorder)  # a Recorder passed in may be shared: not ours to close
        self.recorder = records if isinstance(records, Recorder) else Recorder(records)
        self.prices = prices or load_prices()
        self.log_content = log_content

    def begin(self, policy: str | RetryPolicy | None) -> CallState:
        chosen = self.policy if policy is None else policy_named(policy)
        return CallState(chosen, self.recorder)

    def reply(
        self,
        state: CallState,
        mode: Mode,
        params: Mapping[str, Any],
        rounds: Sequence[Message],
        raise_on_refusal: bool = False,
    ) -> Reply:
        """The successful call's reply, its record written; a refusal raises `Refused` when the caller asked."""
        last = rounds[-1]
        message = last if len(rounds) == 1 else self.combined(rounds)
        facts: dict[str, Any] = {
            "request_id": last._request_id or (state.attempts[-1].request_id if state.attempts else None),
            "rounds": max(state.rounds, len(rounds)),
            "stop_reason": message.stop_reason,
            "outcome": outcome_kind(message.stop_reason),
            "usage": message.usage,
        }
        record: CallRecord | DeferredCallRecord
        if self.log_content:  # the content quotes the caller's own data: recorded as it is now
            record = self._record(state, mode, message.model, content=self._content(params, message), **facts)
        else:  # built (and priced) when first needed, the same record for every reader
            build = partial(self._record, state, mode, message.model, ended=time.monotonic(), at=time.time(), **facts)
            record = DeferredCallRecord(build)
        state.emit_call(record)
        reply = Reply(message, record)
        if raise_on_refusal and message.stop_reason == "refusal":
            raise Refused(reply)
        return reply

    def api_record(self, state: CallState, name: str, mode: Mode) -> None:
        """The call record of an SDK call that is not a message (a batch submission, a poll, a token count)."""
        last = state.attempts[-1] if state.attempts else None
        state.emit_call(self._record(state, mode, "", request_id=last.request_id if last else None, outcome=name))

    def abandoned(self, state: CallState, params: Mapping[str, Any], partial: Message | None) -> None:
        """The call record of a stream its caller left before the end: what it had produced, as far as known."""
        last = state.attempts[-1] if state.attempts else None
        model = partial.model if partial is not None else str(params.get("model"))
        usage = partial.usage if partial is not None else None
        state.emit_call(
            self._record(state, "stream", model, request_id=last.request_id if last else None, outcome="abandoned",
                         usage=usage)
        )  # fmt: skip

    def _record(
        self,
        state: CallState,
        mode: Mode,
        model: str,
        *,
        request_id: str | None,
        rounds: int | None = None,
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
        from a finished call's state; by default, now.
        """
        rounds = max(1, state.rounds) if rounds is None else rounds
        attempts = len(state.attempts)
        if usage is None:
            counts, cost = Usage(), None
        else:
            tokens = token_counts(usage)
            input_, output, write_5m, write_1h, read = tokens
            counts = Usage(input_, output, write_5m + write_1h, read)  # both cache write durations are writes
            cost = self.prices.cost(model, tokens)
        return CallRecord(  # positional: one per call, on the hot path (field order as CallRecord declares it)
            state.call_id,
            mode,
            state.policy.name,
            model,
            request_id,
            stop_reason,
            outcome,
            counts,
            cost,
            ((time.monotonic() if ended is None else ended) - state.started) * 1000,
            state.ttft_ms,
            attempts,
            attempts - rounds if attempts > rounds else 0,
            rounds,
            error_class,
            error,
            content,
            time.time() if at is None else at,
        )

    def combined(self, rounds: Sequence[Message]) -> Message:
        """The rounds of one call as one message: continuations stitched, resumed pauses appended."""
        prefill = supports_prefill(rounds[0].model)
        so_far = rounds[0]
        for current in rounds[1:]:
            if so_far.stop_reason == "pause_turn":
                content = list(so_far.content) + list(current.content)
            else:
                seen = message_text(so_far)
                content = merge_continuation(so_far, current, seen.rstrip() if prefill else None)
            so_far = current.model_copy(update={"content": content})
        return so_far.model_copy(update={"usage": sum_usage(rounds)})

    def failure(
        self, state: CallState, mode: Mode, params: Mapping[str, Any], err: BaseException, outcome: str | None = None
    ) -> CallFailed:
        own = getattr(err, "error_class", None)
        sdk_error = getattr(err, "cause", None) or err
        error_class = own if isinstance(own, ErrorClass) else classify_exception(err)
        last = state.attempts[-1] if state.attempts else None
        request_id = getattr(err, "request_id", None) or (last.request_id if last else None)
        partial = getattr(err, "message", None)  # a stream broken after content: what it had produced is billed
        model = partial.model if isinstance(partial, Message) else str(params.get("model"))
        detail = (
            f"{state.policy.name} deadline of {state.policy.deadline:g} s: {err}" if state.deadline_hit else str(err)
        )
        record = self._record(
            state,
            mode,
            model,
            request_id=request_id,
            outcome=outcome,
            usage=partial.usage if isinstance(partial, Message) else None,
            error_class=error_class.name,
            error=detail,
            content=self._content(params, None) if self.log_content else None,
        )
        state.emit_call(record)
        return CallFailed(error_class, record, sdk_error, deadline_exceeded=state.deadline_hit)

    @staticmethod
    def _content(params: Mapping[str, Any], message: Message | None) -> dict[str, Any]:
        return {
            "system": params.get("system"),
            "messages": params.get("messages"),
            "response": message.model_dump(mode="json")["content"] if message else None,
        }

    def next_round(
        self, params: dict[str, Any], rounds: Sequence[Message], continue_max_tokens: int, resume_pause_turn: int
    ) -> dict[str, Any] | None:
        """The request that continues the answer so far, if the caller asked for continuations and one is due."""
        if not (continue_max_tokens or resume_pause_turn):
            return None
        done = rounds[-1] if len(rounds) == 1 else self.combined(rounds)
        outcome = outcome_of(done)
        continuations = len(rounds) - 1
        if isinstance(outcome, MaxTokens) and not outcome.incomplete_tool_call and continuations < continue_max_tokens:
            return {**params, "messages": continuation_messages(params["messages"], params["model"], outcome.text)}
        if isinstance(outcome, PauseTurn) and continuations < resume_pause_turn:
            return {**params, "messages": resume_messages(params["messages"], done)}
        return None


def _full_jitter(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Exponential backoff with full jitter, never shorter than the server's retry-after."""

    def wait(state: RetryCallState) -> float:
        cap = min(policy.backoff_cap, policy.backoff_base * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, cap)
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        response = getattr(err, "response", None)
        floor = _retry_after(response.headers) if response is not None else None
        return max(delay, floor or 0.0)

    return wait


def _retryable(err: BaseException) -> bool:
    return not isinstance(err, DeadlineExceeded) and classify_exception(err).retryable


def _rounds_kwargs(policy: RetryPolicy) -> dict[str, Any] | None:
    """tenacity settings for keel's rounds around the SDK's retries (background policies only)."""
    if policy.budget is None:
        return None
    return {
        "stop": stop_after_delay(policy.budget),
        "wait": _full_jitter(policy),
        "retry": retry_if_exception(_retryable),
        "reraise": True,
    }


def _call_mode(params: dict[str, Any], mode: CallMode) -> Mode:
    if mode == "stream" or (mode == "auto" and int(params.get("max_tokens", 0)) > NONSTREAMING_MAX_TOKENS):
        return "stream"
    return "standard"


class Messages:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        policy: str | RetryPolicy | None = None,
        mode: CallMode = "standard",
        continue_max_tokens: int = 0,
        resume_pause_turn: int = 0,
        raise_on_refusal: bool = False,
        **params: Any,
    ) -> Reply:
        """Like `anthropic.Anthropic().messages.create(...)`, returning a `Reply`.

        mode="auto" streams underneath when max_tokens could trip the SDK's 10-minute guard, and returns
        one message. continue_max_tokens=N continues a truncated answer up to N times (stitched);
        resume_pause_turn=N sends a paused turn back up to N times.
        """
        client = self._client
        core = client.core
        call_mode = _call_mode(params, mode)
        state = core.begin(policy)
        token = CURRENT_CALL.set(state)
        try:
            rounds = [client.one_round(state, params, call_mode)]
            while (more := core.next_round(params, rounds, continue_max_tokens, resume_pause_turn)) is not None:
                rounds.append(client.one_round(state, more, call_mode))
        except STREAM_FAILURES as err:
            raise core.failure(state, call_mode, params, err) from err
        finally:
            CURRENT_CALL.reset(token)
        return core.reply(state, call_mode, params, rounds, raise_on_refusal)

    def stream(
        self, *, policy: str | RetryPolicy | None = None, on_interrupt: OnInterrupt = "raise", **params: Any
    ) -> ResilientStream:
        """Like the SDK's `messages.stream(...)`, resilient to mid-stream errors and dropped streams."""
        return ResilientStream(self._client, params, policy, on_interrupt)

    def count_tokens(self, *, policy: str | RetryPolicy | None = None, **params: Any) -> int:
        """Input tokens of a request, as `messages.count_tokens` counts them; recorded like any call."""
        return self._client.call(
            "messages.count_tokens", lambda sdk: sdk.messages.count_tokens(**params).input_tokens, policy=policy
        )


SDK = TypeVar("SDK", anthropic.Anthropic, anthropic.AsyncAnthropic)


class _ClientBase(Generic[SDK]):
    """What both clients hold: keel's copy of the SDK client (with the attempt middleware), one per policy."""

    def __init__(
        self,
        base: SDK,
        policy: str | RetryPolicy,
        records: str | Path | Recorder | None,
        prices: PriceTable | None,
        log_content: bool,
    ) -> None:
        self.core = _Core(policy, records, prices, log_content)
        self.sdk: SDK = base.with_options(middleware=[*base.middleware, AttemptMiddleware()])
        # by the policy's identity (a frozen dataclass hashes all its fields on every lookup); the entry holds
        # the policy too, so its id cannot be reused while the entry exists
        self._by_policy: dict[int, tuple[SDK, dict[str, Any] | None, RetryPolicy]] = {}

    def for_policy(self, policy: RetryPolicy) -> tuple[SDK, dict[str, Any] | None]:
        """The SDK client configured for the policy, and tenacity's settings for keel's rounds (None: no rounds).

        Made once per policy: tenacity's stop, wait and retry strategies hold no state of their own.
        """
        entry = self._by_policy.get(id(policy))
        if entry is None:
            sdk = self.sdk.with_options(max_retries=policy.max_retries, timeout=policy.timeout)
            entry = self._by_policy[id(policy)] = (sdk, _rounds_kwargs(policy), policy)
        return entry[0], entry[1]


class Client(_ClientBase[anthropic.Anthropic]):
    """A production-ready `anthropic.Anthropic`: same calls, classified retries, records on every response."""

    def __init__(
        self,
        anthropic_client: anthropic.Anthropic | None = None,
        *,
        policy: str | RetryPolicy = INTERACTIVE,
        records: str | Path | Recorder | None = None,
        prices: PriceTable | None = None,
        log_content: bool = False,
        **sdk_options: Any,
    ) -> None:
        super().__init__(anthropic_client or anthropic.Anthropic(**sdk_options), policy, records, prices, log_content)
        self.messages = Messages(self)

    def one_round(self, state: CallState, params: dict[str, Any], mode: Mode) -> Message:
        """One request, with the SDK's retries inside and, for background policies, keel's rounds around it."""
        sdk, rounds = self.for_policy(state.policy)
        state.rounds += 1
        if mode == "stream":

            def request() -> Message:
                state.rounds -= 1  # the stream counts its own rounds
                return ResilientStream(self, params, None, "continue", state=state).get_final_message()

        else:
            # the type as a string: `Callable[[], Message]` itself would build a typing alias on every call
            request = cast("Callable[[], Message]", partial(sdk.messages.create, **params))

        return request() if rounds is None else Retrying(**rounds)(request)

    def call(
        self,
        name: str,
        fn: Callable[[anthropic.Anthropic], T],
        *,
        policy: str | RetryPolicy | None = None,
        mode: Mode = "standard",
    ) -> T:
        """Any other SDK call (Message Batches, token counts, models…) with keel's policy and records.

        `fn` receives the SDK client configured for the policy; each HTTP attempt gets its attempt record,
        the call a `CallRecord` (`outcome` = `name`, no model or usage); a failure raises `CallFailed`.
        """
        core = self.core
        state = core.begin(policy)
        token = CURRENT_CALL.set(state)
        try:
            state.rounds += 1
            sdk, rounds = self.for_policy(state.policy)
            result = fn(sdk) if rounds is None else Retrying(**rounds)(fn, sdk)
        except STREAM_FAILURES as err:
            raise core.failure(state, mode, {"model": ""}, err, outcome=name) from err
        finally:
            CURRENT_CALL.reset(token)
        core.api_record(state, name, mode)
        return result

    def close(self) -> None:
        self.sdk.close()
        if self.core.owns_recorder:
            self.core.recorder.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMessages:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        policy: str | RetryPolicy | None = None,
        mode: CallMode = "standard",
        continue_max_tokens: int = 0,
        resume_pause_turn: int = 0,
        raise_on_refusal: bool = False,
        **params: Any,
    ) -> Reply:
        """Like `anthropic.AsyncAnthropic().messages.create(...)`, returning a `Reply` (see `Messages.create`)."""
        client = self._client
        core = client.core
        call_mode = _call_mode(params, mode)
        state = core.begin(policy)
        token = CURRENT_CALL.set(state)
        try:
            rounds = [await client.one_round(state, params, call_mode)]
            while (more := core.next_round(params, rounds, continue_max_tokens, resume_pause_turn)) is not None:
                rounds.append(await client.one_round(state, more, call_mode))
        except STREAM_FAILURES as err:
            raise core.failure(state, call_mode, params, err) from err
        finally:
            CURRENT_CALL.reset(token)
        return core.reply(state, call_mode, params, rounds, raise_on_refusal)

    def stream(
        self, *, policy: str | RetryPolicy | None = None, on_interrupt: OnInterrupt = "raise", **params: Any
    ) -> AsyncResilientStream:
        """Like the SDK's async `messages.stream(...)`, resilient to mid-stream errors and dropped streams."""
        return AsyncResilientStream(self._client, params, policy, on_interrupt)

    async def count_tokens(self, *, policy: str | RetryPolicy | None = None, **params: Any) -> int:
        """Input tokens of a request, as `messages.count_tokens` counts them; recorded like any call."""

        async def count(sdk: anthropic.AsyncAnthropic) -> int:
            return (await sdk.messages.count_tokens(**params)).input_tokens

        return await self._client.call("messages.count_tokens", count, policy=policy)


class AsyncClient(_ClientBase[anthropic.AsyncAnthropic]):
    """A production-ready `anthropic.AsyncAnthropic`: same calls, classified retries, records on every response."""

    def __init__(
        self,
        anthropic_client: anthropic.AsyncAnthropic | None = None,
        *,
        policy: str | RetryPolicy = INTERACTIVE,
        records: str | Path | Recorder | None = None,
        prices: PriceTable | None = None,
        log_content: bool = False,
        **sdk_options: Any,
    ) -> None:
        base = anthropic_client or anthropic.AsyncAnthropic(**sdk_options)
        super().__init__(base, policy, records, prices, log_content)
        self.messages = AsyncMessages(self)

    async def one_round(self, state: CallState, params: dict[str, Any], mode: Mode) -> Message:
        sdk, rounds = self.for_policy(state.policy)
        state.rounds += 1

        async def request() -> Message:
            if mode == "stream":
                state.rounds -= 1  # the stream counts its own rounds
                return await AsyncResilientStream(self, params, None, "continue", state=state).get_final_message()
            return cast(Message, await sdk.messages.create(**params))

        return await request() if rounds is None else await AsyncRetrying(**rounds)(request)

    async def call(
        self,
        name: str,
        fn: Callable[[anthropic.AsyncAnthropic], Awaitable[T]],
        *,
        policy: str | RetryPolicy | None = None,
        mode: Mode = "standard",
    ) -> T:
        """Any other SDK call, with keel's policy and records (see `Client.call`)."""
        core = self.core
        state = core.begin(policy)
        token = CURRENT_CALL.set(state)
        try:
            state.rounds += 1
            sdk, rounds = self.for_policy(state.policy)
            result: T = await fn(sdk) if rounds is None else await AsyncRetrying(**rounds)(fn, sdk)
        except STREAM_FAILURES as err:
            raise core.failure(state, mode, {"model": ""}, err, outcome=name) from err
        finally:
            CURRENT_CALL.reset(token)
        core.api_record(state, name, mode)
        return result

    async def close(self) -> None:
        await self.sdk.close()
        if self.core.owns_recorder:
            self.core.recorder.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
