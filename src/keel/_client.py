"""`keel.Client` / `keel.AsyncClient`: the SDK's calls, with classified retries, records and outcomes.

    client = keel.Client()                     # reads ANTHROPIC_API_KEY like the SDK, or Client(anthropic_client)
    reply = client.messages.create(model=..., max_tokens=..., messages=[...])
    reply.message      # the SDK's own Message
    reply.outcome      # keel outcome: EndTurn, MaxTokens, ToolUse, Refusal, ...
    reply.record       # the CallRecord: request_id, usage, cost, latency, attempts

A failed call raises `CallFailed` (classification, request_id, attempts; `.sdk_error` is the SDK's
typed exception). The path of a call: the client begins a `Call` and sets it as the current call; the SDK's
own retry loop makes the HTTP attempts, each seen by keel's middleware; the call ends in a `Reply` or a
`CallFailed`, and writes its record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

import anthropic
from anthropic.types import Message
from tenacity import AsyncRetrying, Retrying

from ._call import Call, CallSettings, Reply
from ._continuation import next_request
from ._middleware import AttemptMiddleware
from ._modes import Mode, call_mode
from ._pricing import PriceTable
from ._records import Recorder
from ._retry_notices import noticed_rounds
from ._retrying import INTERACTIVE, RetryPolicy
from ._streaming import AsyncResilientStream, OnInterrupt, ResilientStream
from ._telemetry import Telemetry, telemetry_of
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    from ._budget import Budget
    from .bulk import Result

T = TypeVar("T")
SDK = TypeVar("SDK", anthropic.Anthropic, anthropic.AsyncAnthropic)


class _ClientBase(Generic[SDK]):
    """What both clients hold: the call settings, and keel's copy of the SDK client (with the attempt
    middleware), one per policy."""

    def __init__(
        self,
        base: SDK,
        policy: str | RetryPolicy,
        records: str | Path | Recorder | None,
        prices: PriceTable | None,
        log_content: bool,
        limiter: RateLimiter | None,
        telemetry: bool | Telemetry,
    ) -> None:
        self.settings = CallSettings(policy, records, prices, log_content, limiter, telemetry_of(telemetry))
        self.sdk: SDK = base.with_options(middleware=[*base.middleware, AttemptMiddleware()])
        # by the policy's identity (a frozen dataclass hashes all its fields on every lookup); the entry holds
        # the policy too, so its id cannot be reused while the entry exists
        self._by_policy: dict[int, tuple[SDK, dict[str, Any] | None, RetryPolicy]] = {}

    def for_policy(self, policy: RetryPolicy) -> tuple[SDK, dict[str, Any] | None]:
        """The SDK client configured for the policy, and tenacity's settings for keel's rounds (None: no rounds).

        Made once per policy: tenacity's stop, wait and retry strategies hold no state of their own. Each wait
        between rounds is noticed on the `keel.retrying` logger (`keel._retry_notices`).
        """
        entry = self._by_policy.get(id(policy))
        if entry is None:
            sdk = self.sdk.with_options(max_retries=policy.max_retries, timeout=policy.timeout)
            entry = self._by_policy[id(policy)] = (sdk, noticed_rounds(policy), policy)
        return entry[0], entry[1]


def _with_timeout(params: dict[str, Any], policy: RetryPolicy) -> dict[str, Any]:
    """A `create` call's parameters with the policy's timeout, unless they name their own.

    keel's SDK client already has that timeout; given with the call as well, it spares the SDK deep-copying a
    default into the request's options on every call (about 22 k of keel's ~160 k instructions a call).
    """
    return params if "timeout" in params else {**params, "timeout": policy.timeout}


class Client(_ClientBase[anthropic.Anthropic]):
    """A production-ready `anthropic.Anthropic`: same calls, classified retries, records on every response.

    `policy`: "interactive" (default), "background" or a `RetryPolicy`. `records`: a JSONL file (or a
    `Recorder`) for the records. `prices`: a `PriceTable` (default: the packaged prices). `log_content`: put
    messages in call records. `limiter`: a `keel.ratelimit.RateLimiter` that paces every attempt (retries
    included); share one (or one Redis-backed store) between clients to share the limits. `telemetry`: keel's
    OpenTelemetry attributes on the SDK's spans and its metrics, to the global meter provider (True, the default),
    to a `keel.Telemetry`'s, or none (False); see docs/telemetry.md. Other keyword arguments build the
    `anthropic.Anthropic` when none is passed.
    """

    def __init__(
        self,
        anthropic_client: anthropic.Anthropic | None = None,
        *,
        policy: str | RetryPolicy = INTERACTIVE,
        records: str | Path | Recorder | None = None,
        prices: PriceTable | None = None,
        log_content: bool = False,
        limiter: RateLimiter | None = None,
        telemetry: bool | Telemetry = True,
        **sdk_options: Any,
    ) -> None:
        base = anthropic_client or anthropic.Anthropic(**sdk_options)
        super().__init__(base, policy, records, prices, log_content, limiter, telemetry)
        self.messages = Messages(self)

    def one_round(self, call: Call, params: dict[str, Any]) -> Message:
        """One request, with the SDK's retries inside and, for background policies, keel's rounds around it."""
        sdk, rounds = self.for_policy(call.policy)
        call.start_round()
        if call.mode == "stream":

            def request() -> Message:
                return ResilientStream(sdk, call, params, "continue", owns_call=False).get_final_message()

        else:
            # the type as a string: `Callable[[], Message]` itself would build a typing alias on every call
            request = cast("Callable[[], Message]", partial(sdk.messages.create, **_with_timeout(params, call.policy)))
        message = request() if rounds is None else Retrying(**rounds)(request)
        if call.pacing is not None:
            call.pacing.settle(message.usage)  # a stream settles its own rounds: nothing is left to settle then
        return message

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
        with self.settings.begin(policy, mode, {}, name) as call:
            call.start_round()
            sdk, rounds = self.for_policy(call.policy)
            result = fn(sdk) if rounds is None else Retrying(**rounds)(fn, sdk)
        call.finished()
        return result

    def map(
        self,
        requests: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 8,
        policy: str | RetryPolicy = "background",
        budget: Budget | float | None = None,
    ) -> Iterator[Result[Mapping[str, Any]]]:
        """Each request as `messages.create(**params)`, `concurrency` at a time, within `budget` (USD or a `Budget`);
        a `keel.bulk.Result` each, in input order. See `keel.bulk`."""
        from .bulk.engine import map_sync

        return map_sync(self, requests, concurrency=concurrency, policy=policy, budget=budget)

    def close(self) -> None:
        self.sdk.close()
        self.settings.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Messages:
    """`client.messages`: `create`, `stream` and `count_tokens`, as on the SDK."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        policy: str | RetryPolicy | None = None,
        mode: Mode | Literal["auto"] = "standard",
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
        with client.settings.begin(policy, call_mode(mode, params), params) as call:
            rounds = [client.one_round(call, params)]
            while (more := next_request(params, rounds, continue_max_tokens, resume_pause_turn)) is not None:
                rounds.append(client.one_round(call, more))
        return call.succeeded(rounds, raise_on_refusal)

    def stream(
        self, *, policy: str | RetryPolicy | None = None, on_interrupt: OnInterrupt = "raise", **params: Any
    ) -> ResilientStream:
        """Like the SDK's `messages.stream(...)`, resilient to mid-stream errors and dropped streams."""
        call = self._client.settings.begin(policy, "stream", params)
        sdk, _ = self._client.for_policy(call.policy)
        return ResilientStream(sdk, call, params, on_interrupt)

    def count_tokens(self, *, policy: str | RetryPolicy | None = None, **params: Any) -> int:
        """Input tokens of a request, as `messages.count_tokens` counts them; recorded like any call."""
        return self._client.call(
            "messages.count_tokens", lambda sdk: sdk.messages.count_tokens(**params).input_tokens, policy=policy
        )


class AsyncClient(_ClientBase[anthropic.AsyncAnthropic]):
    """A production-ready `anthropic.AsyncAnthropic`: the async twin of `Client`."""

    def __init__(
        self,
        anthropic_client: anthropic.AsyncAnthropic | None = None,
        *,
        policy: str | RetryPolicy = INTERACTIVE,
        records: str | Path | Recorder | None = None,
        prices: PriceTable | None = None,
        log_content: bool = False,
        limiter: RateLimiter | None = None,
        telemetry: bool | Telemetry = True,
        **sdk_options: Any,
    ) -> None:
        base = anthropic_client or anthropic.AsyncAnthropic(**sdk_options)
        super().__init__(base, policy, records, prices, log_content, limiter, telemetry)
        self.messages = AsyncMessages(self)

    async def one_round(self, call: Call, params: dict[str, Any]) -> Message:
        """One request, with the SDK's retries inside and, for background policies, keel's rounds around it."""
        sdk, rounds = self.for_policy(call.policy)
        call.start_round()

        # module-level coroutine functions, not a closure per call: under concurrency, every object a waiting call
        # holds is work for the garbage collector
        request: Callable[[], Awaitable[Message]] = (
            partial(_streamed, sdk, call, params)
            if call.mode == "stream"
            else partial(_created, sdk, _with_timeout(params, call.policy))
        )
        message = await request() if rounds is None else await AsyncRetrying(**rounds)(request)
        if call.pacing is not None:
            await call.pacing.settle_async(message.usage)  # a stream settles its own rounds: nothing is left then
        return message

    async def call(
        self,
        name: str,
        fn: Callable[[anthropic.AsyncAnthropic], Awaitable[T]],
        *,
        policy: str | RetryPolicy | None = None,
        mode: Mode = "standard",
    ) -> T:
        """Any other SDK call, with keel's policy and records (see `Client.call`)."""
        with self.settings.begin(policy, mode, {}, name) as call:
            call.start_round()
            sdk, rounds = self.for_policy(call.policy)
            result: T = await fn(sdk) if rounds is None else await AsyncRetrying(**rounds)(fn, sdk)
        call.finished()
        return result

    def map(
        self,
        requests: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 8,
        policy: str | RetryPolicy = "background",
        budget: Budget | float | None = None,
    ) -> AsyncIterator[Result[Mapping[str, Any]]]:
        """Each request as `messages.create(**params)`, `concurrency` at a time, within `budget` (USD or a `Budget`);
        a `keel.bulk.Result` each, in input order. See `keel.bulk`."""
        from .bulk.engine import map_async

        return map_async(self, requests, concurrency=concurrency, policy=policy, budget=budget)

    async def close(self) -> None:
        await self.sdk.close()
        self.settings.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _created(sdk: anthropic.AsyncAnthropic, params: dict[str, Any]) -> Message:
    """One round of an async `create` (a coroutine function, as tenacity needs to tell it is one: the SDK's
    `create` is a plain function returning a coroutine)."""
    return cast(Message, await sdk.messages.create(**params))


async def _streamed(sdk: anthropic.AsyncAnthropic, call: Call, params: dict[str, Any]) -> Message:
    """One round of an async `create` made as a stream (the stream's retries and resumes inside)."""
    return await AsyncResilientStream(sdk, call, params, "continue", owns_call=False).get_final_message()


class AsyncMessages:
    """`client.messages` of an `AsyncClient`: the async twin of `Messages`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        policy: str | RetryPolicy | None = None,
        mode: Mode | Literal["auto"] = "standard",
        continue_max_tokens: int = 0,
        resume_pause_turn: int = 0,
        raise_on_refusal: bool = False,
        **params: Any,
    ) -> Reply:
        """Like `anthropic.AsyncAnthropic().messages.create(...)`, returning a `Reply` (see `Messages.create`)."""
        client = self._client
        with client.settings.begin(policy, call_mode(mode, params), params) as call:
            rounds = [await client.one_round(call, params)]
            while (more := next_request(params, rounds, continue_max_tokens, resume_pause_turn)) is not None:
                rounds.append(await client.one_round(call, more))
        return call.succeeded(rounds, raise_on_refusal)

    def stream(
        self, *, policy: str | RetryPolicy | None = None, on_interrupt: OnInterrupt = "raise", **params: Any
    ) -> AsyncResilientStream:
        """Like the SDK's async `messages.stream(...)`, resilient to mid-stream errors and dropped streams."""
        call = self._client.settings.begin(policy, "stream", params)
        sdk, _ = self._client.for_policy(call.policy)
        return AsyncResilientStream(sdk, call, params, on_interrupt)

    async def count_tokens(self, *, policy: str | RetryPolicy | None = None, **params: Any) -> int:
        """Input tokens of a request, as `messages.count_tokens` counts them; recorded like any call."""

        async def count(sdk: anthropic.AsyncAnthropic) -> int:
            return (await sdk.messages.count_tokens(**params)).input_tokens

        return await self._client.call("messages.count_tokens", count, policy=policy)
