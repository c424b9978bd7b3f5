"""Resilient streams: the SDK's `messages.stream()`, made to survive mid-stream errors and dropped streams.

Before any content has reached the caller, a mid-stream error event, a dropped connection or a stream
cut short is retried transparently (tenacity, within the call's retry policy). After content has reached
the caller, `on_interrupt` decides:

- `"raise"` (default): `StreamInterrupted` with the partial text, the request_id and the error class;
- `"continue"`: a continuation request as the docs describe (a user message quoting where the answer
  ended, for 4.6+ models; the partial text as a prefill for 4.5 and older), its text stitched on so the
  caller sees no duplicate and no gap. Tool-use and thinking blocks are never partially resumed: an
  unfinished one is dropped and the answer resumes from the last text.

Events pass through as the SDK yields them; in a resumed round, text arrives as `text` events only
(raw text deltas would repeat what the stitching removed), and `message_start` is not repeated.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anthropic
import httpx2
from anthropic.lib.streaming import TextEvent
from anthropic.types import Message
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from .calls import CURRENT_CALL, CallState, DeadlineExceeded
from .errors import STREAM_INTERRUPTED, ErrorClass, classify_exception
from .policy import RetryPolicy
from .stop import continuation_messages, stitch, supports_prefill

if TYPE_CHECKING:
    from .client import AsyncClient, Client, Reply

OnInterrupt = Literal["raise", "continue"]
STITCH_HOLD = 200  # characters of a resumed round held back until the overlap with what was seen is known
MAX_RESUMES = 3


class StreamInterrupted(Exception):
    """A stream broke after content reached the caller; the partial answer is kept here."""

    def __init__(self, partial_text: str, request_id: str | None, error_class: ErrorClass, message: Message | None):
        self.partial_text = partial_text
        self.request_id = request_id
        self.error_class = error_class
        self.message = message
        super().__init__(
            f"stream interrupted after {len(partial_text)} characters, request_id={request_id}: {error_class.label()}"
        )


class _BeforeContent(Exception):
    """An interruption before any content: safe to repeat the request unchanged."""

    def __init__(self, error_class: ErrorClass, cause: BaseException | None) -> None:
        super().__init__(error_class.label())
        self.error_class = error_class
        self.cause = cause


STREAM_FAILURES: tuple[type[BaseException], ...] = (
    anthropic.AnthropicError,
    DeadlineExceeded,
    ValueError,
    StreamInterrupted,
    _BeforeContent,
)
INTERRUPTIONS: tuple[type[BaseException], ...] = (
    anthropic.APIStatusError,
    anthropic.APIConnectionError,
    httpx2.TransportError,
)


def _is_mid_stream(err: BaseException) -> bool:
    """Errors that can break a stream that had started: an error event (status 200) or a lost connection."""
    if isinstance(err, anthropic.APIStatusError):
        return err.status_code == 200
    return isinstance(err, anthropic.APIConnectionError | httpx2.TransportError)


class _Stitcher:
    """Removes from a resumed round's text what the caller has already seen."""

    def __init__(self, seen: str, sent_prefix: str | None) -> None:
        self.seen = seen
        self.sent_prefix = sent_prefix
        self.buffer = ""
        self.resolved = False

    def feed(self, text: str) -> str:
        if self.resolved:
            return text
        self.buffer += text
        return self.flush() if len(self.buffer) >= STITCH_HOLD else ""

    def flush(self) -> str:
        if self.resolved:
            return ""
        self.resolved = True
        return stitch(self.seen, self.buffer, self.sent_prefix)


@dataclass
class _Round:
    params: dict[str, Any]
    stitcher: _Stitcher | None
    got_content: bool = False


class _FirstAttempt:
    """The first attempt of a round runs without tenacity (the common case costs nothing extra); an
    interruption before content is noted here and the round goes on under tenacity."""

    failed = False

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, _BeforeContent):
            self.failed = True
            return True
        return False


class _StreamCore:
    """The state machine shared by the sync and async streams: events in, decisions out."""

    def __init__(self, params: dict[str, Any], state: CallState, on_interrupt: OnInterrupt, max_resumes: int) -> None:
        if on_interrupt not in ("raise", "continue"):
            raise ValueError(f"on_interrupt: expected 'raise' or 'continue', got {on_interrupt!r}")
        self.params = params
        self.state = state
        self.on_interrupt = on_interrupt
        self.max_resumes = max_resumes
        self._seen: list[str] = []  # text handed to the caller, joined only when needed (no quadratic +=)
        self.parts: list[Message] = []  # the partial messages of interrupted rounds, then the last one
        self.request_id: str | None = None
        self.round = _Round(params, None)
        self.final: Message | None = None
        self.live: Any = None  # the SDK stream of the current round

    @property
    def text_seen(self) -> str:
        if len(self._seen) > 1:
            self._seen = ["".join(self._seen)]
        return self._seen[0] if self._seen else ""

    def first_backoff(self) -> float:
        """The wait before the second attempt: tenacity's first wait, as `retrying_kwargs` would give it."""
        return random.uniform(0, min(0.25, self.state.policy.backoff_cap))

    def retrying_kwargs(self) -> dict[str, Any]:
        """tenacity settings for the attempts after the first (the policy's retries, deadline or budget)."""
        policy: RetryPolicy = self.state.policy
        stop: stop_base = stop_after_attempt(max(1, policy.max_retries))
        if policy.budget is not None:
            stop = stop_after_delay(policy.budget)
        elif policy.deadline is not None:
            stop = stop_any(stop, stop_after_delay(policy.deadline))
        return {
            "stop": stop,
            "wait": wait_random_exponential(multiplier=0.25, max=policy.backoff_cap),
            "retry": retry_if_exception_type(_BeforeContent),
            "reraise": True,
        }

    @property
    def snapshot(self) -> Message | None:
        """What the current round has produced so far (None before it started)."""
        return _snapshot(self.live) if self.live is not None else None

    def start_round(self, request_id: str | None, stream: Any) -> None:
        self.live = stream
        self.state.rounds += 1
        self.request_id = request_id
        self.round.got_content = False

    def on_event(self, event: Any) -> Any | None:
        """The event to hand the caller (None: swallow it)."""
        kind = event.type
        stitcher = self.round.stitcher
        if kind == "content_block_delta":
            self.round.got_content = True
            self.state.mark_first_token()
            if stitcher is not None and event.delta.type == "text_delta":
                return None
        elif kind == "text":
            text = event.text if stitcher is None else stitcher.feed(event.text)
            if not text:
                return None
            self._seen.append(text)
            return event if stitcher is None else event.model_copy(update={"text": text, "snapshot": self.text_seen})
        elif kind == "message_start" and stitcher is not None:
            return None
        elif stitcher is not None and not stitcher.resolved and kind in ("content_block_stop", "message_delta"):
            return self._flushed()
        return event

    def _flushed(self) -> TextEvent | None:
        stitcher = self.round.stitcher
        text = stitcher.flush() if stitcher is not None else ""
        if not text:
            return None
        self._seen.append(text)
        return TextEvent(type="text", text=text, snapshot=self.text_seen)

    def pending(self) -> TextEvent | None:
        """Text still held by the stitcher when a round ends."""
        return self._flushed()

    def end_round(self, snapshot: Message | None, error: BaseException | None) -> bool:
        """After a round: True when the stream is complete; otherwise set up the next round or raise."""
        if error is None and snapshot is not None and snapshot.stop_reason is not None:
            self.parts.append(snapshot)
            self.final = self._combined()
            return True
        error_class = (
            STREAM_INTERRUPTED
            if error is None or isinstance(error, httpx2.TransportError)
            else classify_exception(error)
        )
        if not self.round.got_content:
            raise _BeforeContent(error_class, error)
        partial = _without_unfinished_blocks(snapshot)
        if self.on_interrupt == "raise" or len(self.parts) >= self.max_resumes:
            raise StreamInterrupted(self.text_seen, self.request_id, error_class, partial)
        if partial is not None:
            self.parts.append(partial)
        model = self.params["model"]
        sent_prefix = self.text_seen.rstrip() if supports_prefill(model) else None
        messages = continuation_messages(self.params["messages"], model, self.text_seen)
        self.round = _Round({**self.params, "messages": messages}, _Stitcher(self.text_seen, sent_prefix))
        return False

    def _combined(self) -> Message:
        """One message for the whole stream: the text block holds exactly the stitched text the caller saw."""
        from .client import sum_usage

        if len(self.parts) == 1:
            message = self.parts[0]
        else:
            first = list(self.parts[0].content)
            at = next((i for i, block in enumerate(first) if block.type == "text"), len(first))
            before = first[:at]
            text = [first[at].model_copy(update={"text": self.text_seen})] if at < len(first) else []
            after = [block for part in self.parts for block in part.content if block.type != "text"][len(before) :]
            content = before + text + after
            message = self.parts[-1].model_copy(update={"content": content, "usage": sum_usage(self.parts)})
        message._request_id = self.request_id
        return message


def _without_unfinished_blocks(snapshot: Message | None) -> Message | None:
    """A partial message minus a trailing tool_use/thinking block that was cut off (never resumed partially)."""
    if snapshot is None:
        return None
    content = list(snapshot.content)
    while content and content[-1].type != "text":
        content.pop()
    return snapshot.model_copy(update={"content": content})


def _snapshot(stream: Any) -> Message | None:
    try:
        return stream.current_message_snapshot  # type: ignore[no-any-return]
    except AssertionError:  # nothing arrived yet
        return None


class _StreamBase:
    """What the sync and async streams share: the call they belong to, and how a stream ends."""

    def __init__(
        self,
        client: Client | AsyncClient,
        params: dict[str, Any],
        policy: str | RetryPolicy | None,
        on_interrupt: OnInterrupt,
        state: CallState | None,
        max_resumes: int,
    ) -> None:
        self._client_core = client.core
        self._own_call = state is None
        self._state = state or client.core.begin(policy)
        self._core = _StreamCore(dict(params), self._state, on_interrupt, max_resumes)
        self._token: Any = None
        self._recorded = False  # the call record is written (finished, failed, or left early)
        self.reply: Reply | None = None

    @property
    def request_id(self) -> str | None:
        return self._core.request_id

    def _enter(self) -> None:
        if self._own_call:
            self._token = CURRENT_CALL.set(self._state)

    def _exit(self) -> None:
        if self._own_call and not self._recorded and self._state.rounds:  # left before its end: still recorded
            self._recorded = True
            self._client_core.abandoned(self._state, self._core.params, self._core.snapshot)
        if self._token is not None:
            CURRENT_CALL.reset(self._token)
            self._token = None

    def _failed(self, err: BaseException) -> BaseException:
        """What to raise for a stream that failed: its own `CallFailed` (or `StreamInterrupted`) when the stream
        is a call of its own; the error itself inside a larger call, which records the failure."""
        if not self._own_call:
            return err
        self._recorded = True
        failed = self._client_core.failure(self._state, "stream", self._core.params, err)
        return err if isinstance(err, StreamInterrupted) else failed

    def _finished(self) -> None:
        assert self._core.final is not None
        if self._own_call:
            self._recorded = True
            self.reply = self._client_core.reply(self._state, "stream", self._core.params, [self._core.final])


class ResilientStream(_StreamBase):
    """Sync resilient stream: use as a context manager, iterate events or `text_stream`, then `get_final_message()`."""

    def __init__(
        self,
        client: Client,
        params: dict[str, Any],
        policy: str | RetryPolicy | None,
        on_interrupt: OnInterrupt = "raise",
        *,
        state: CallState | None = None,
        max_resumes: int = MAX_RESUMES,
    ) -> None:
        super().__init__(client, params, policy, on_interrupt, state, max_resumes)
        self._sdk, _ = client.for_policy(self._state.policy)
        self._iterator = self._events()
        self.text_stream: Iterator[str] = (event.text for event in self if event.type == "text")

    def __enter__(self) -> ResilientStream:
        self._enter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._iterator.close()
        self._exit()

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def _attempts(self) -> Iterator[AbstractContextManager[Any]]:
        first = _FirstAttempt()
        yield first
        if first.failed:
            time.sleep(self._core.first_backoff())
            yield from Retrying(**self._core.retrying_kwargs())

    def _events(self) -> Generator[Any, None, None]:
        core = self._core
        try:
            while True:
                for attempt in self._attempts():
                    with attempt:
                        snapshot, error = None, None
                        with self._sdk.messages.stream(**core.round.params) as stream:
                            core.start_round(stream.request_id, stream)
                            try:
                                for event in stream:
                                    if (out := core.on_event(event)) is not None:
                                        yield out
                            except INTERRUPTIONS as err:
                                if not _is_mid_stream(err):
                                    raise
                                error = err
                            snapshot = _snapshot(stream)
                        if (tail := core.pending()) is not None:
                            yield tail
                        done = core.end_round(snapshot, error)
                if done:
                    break
        except STREAM_FAILURES as err:
            failed = self._failed(err)
            if failed is err:
                raise
            raise failed from err
        self._finished()

    def get_final_message(self) -> Message:
        for _ in self:
            pass
        assert self._core.final is not None
        return self._core.final

    def until_done(self) -> None:
        self.get_final_message()


class AsyncResilientStream(_StreamBase):
    """Async resilient stream: `async with`, iterate events or `text_stream`, then `await get_final_message()`."""

    def __init__(
        self,
        client: AsyncClient,
        params: dict[str, Any],
        policy: str | RetryPolicy | None,
        on_interrupt: OnInterrupt = "raise",
        *,
        state: CallState | None = None,
        max_resumes: int = MAX_RESUMES,
    ) -> None:
        super().__init__(client, params, policy, on_interrupt, state, max_resumes)
        self._sdk, _ = client.for_policy(self._state.policy)
        self._iterator = self._events()

    @property
    def text_stream(self) -> AsyncIterator[str]:
        return (event.text async for event in self if event.type == "text")

    async def __aenter__(self) -> AsyncResilientStream:
        self._enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._iterator.aclose()
        self._exit()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def _attempts(self) -> AsyncIterator[AbstractContextManager[Any]]:
        first = _FirstAttempt()
        yield first
        if first.failed:
            await asyncio.sleep(self._core.first_backoff())
            async for attempt in AsyncRetrying(**self._core.retrying_kwargs()):
                yield attempt

    async def _events(self) -> AsyncGenerator[Any, None]:
        core = self._core
        try:
            while True:
                async for attempt in self._attempts():
                    with attempt:
                        snapshot, error = None, None
                        async with self._sdk.messages.stream(**core.round.params) as stream:
                            core.start_round(stream.request_id, stream)
                            try:
                                async for event in stream:
                                    if (out := core.on_event(event)) is not None:
                                        yield out
                            except INTERRUPTIONS as err:
                                if not _is_mid_stream(err):
                                    raise
                                error = err
                            snapshot = _snapshot(stream)
                        if (tail := core.pending()) is not None:
                            yield tail
                        done = core.end_round(snapshot, error)
                if done:
                    break
        except STREAM_FAILURES as err:
            failed = self._failed(err)
            if failed is err:
                raise
            raise failed from err
        self._finished()

    async def get_final_message(self) -> Message:
        async for _ in self:
            pass
        assert self._core.final is not None
        return self._core.final
