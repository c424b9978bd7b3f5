"""Resilient streams: the SDK's `messages.stream()`, made to survive mid-stream errors and dropped streams.

Before any content has reached the caller, a mid-stream error event, a dropped connection or a stream
cut short is retried transparently (tenacity, within the call's retry policy). After content has reached
the caller, `on_interrupt` decides:

- `"raise"` (default): `StreamInterrupted` with the partial text, the request_id and the error class;
- `"continue"`: a continuation request as the docs describe (a user message quoting where the answer
  ended, for 4.6+ models; the partial text as a prefill for 4.5 and older), its text stitched on so the
  caller sees no duplicate and no gap. Tool-use and thinking blocks are never partially resumed: an
  unfinished one is dropped and the answer resumes from the last text.

Under a background policy, a stream that cannot even open (a 529 storm that outlasts the SDK's own retries) is
retried with keel's rounds, as a `create` is.

Events pass through as the SDK yields them; in a resumed round, text arrives as `text` events only
(raw text deltas would repeat what the stitching removed), and `message_start` is not repeated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import anthropic
import httpx2
from anthropic.lib.streaming import TextEvent
from anthropic.types import Message
from tenacity import AsyncRetrying, Retrying

from ._call import CURRENT_CALL, Call, Reply
from ._continuation import Stitcher, combine_stream, continuation_messages, supports_prefill, without_unfinished_blocks
from ._error_map import STREAM_INTERRUPTED, classify_exception
from ._exceptions import CALL_ERRORS, BrokeBeforeContent, StreamInterrupted
from ._retry_notices import noticed_rounds
from ._retrying import first_stream_restart_wait, stream_restarts

OnInterrupt = Literal["raise", "continue"]
MAX_RESUMES = 3
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


@dataclass
class _Round:
    params: dict[str, Any]
    stitcher: Stitcher | None
    counted: bool  # the call has counted this round (a `create` counts the first round of a stream it makes)
    got_content: bool = False


class _FirstAttempt:
    """The first attempt of a round runs without tenacity (the common case costs nothing extra); an
    interruption before content is noted here and the round goes on under tenacity."""

    failed = False

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, BrokeBeforeContent):
            self.failed = True
            return True
        return False


class _StreamCore:
    """The state machine shared by the sync and async streams: events in, decisions out."""

    def __init__(
        self, params: dict[str, Any], call: Call, on_interrupt: OnInterrupt, max_resumes: int, owns_call: bool
    ) -> None:
        if on_interrupt not in ("raise", "continue"):
            raise ValueError(f"on_interrupt: expected 'raise' or 'continue', got {on_interrupt!r}")
        self.params = params
        self.call = call
        self.on_interrupt = on_interrupt
        self.max_resumes = max_resumes
        self._seen: list[str] = []  # text handed to the caller, joined only when needed (no quadratic +=)
        self.parts: list[Message] = []  # the partial messages of interrupted rounds, then the last one
        self.request_id: str | None = None
        self.round = _Round(params, None, counted=not owns_call)
        self.final: Message | None = None
        self.live: Any = None  # the SDK stream of the current round

    @property
    def text_seen(self) -> str:
        if len(self._seen) > 1:
            self._seen = ["".join(self._seen)]
        return self._seen[0] if self._seen else ""

    @property
    def snapshot(self) -> Message | None:
        """What the current round has produced so far (None before it started)."""
        return _snapshot(self.live) if self.live is not None else None

    def start_round(self, request_id: str | None, stream: Any) -> None:
        """An attempt at the current round has begun: the round is counted once, however many attempts it takes."""
        self.live = stream
        if not self.round.counted:
            self.round.counted = True
            self.call.start_round()
        self.request_id = request_id
        self.round.got_content = False

    def on_event(self, event: Any) -> Any | None:
        """The event to hand the caller (None: swallow it)."""
        kind = event.type
        stitcher = self.round.stitcher
        if kind == "content_block_delta":
            self.round.got_content = True
            self.call.mark_first_token()
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
        elif kind == "message_stop" and self.call.span is not None:  # the SDK's span ends with the body, after this
            self.call.response_priced(self.snapshot)
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
            self.call.retry_of = error_class.name  # a restart, if the policy allows one, retries it
            raise BrokeBeforeContent(error_class, error)
        partial = without_unfinished_blocks(snapshot)
        if self.on_interrupt == "raise" or len(self.parts) >= self.max_resumes:
            raise StreamInterrupted(self.text_seen, self.request_id, error_class, partial)
        if partial is not None:
            self.parts.append(partial)
        model = self.params["model"]
        sent_prefix = self.text_seen.rstrip() if supports_prefill(model) else None
        messages = continuation_messages(self.params["messages"], model, self.text_seen)
        self.round = _Round({**self.params, "messages": messages}, Stitcher(self.text_seen, sent_prefix), counted=False)
        return False

    def _combined(self) -> Message:
        message = combine_stream(self.parts, self.text_seen)
        message._request_id = self.request_id
        return message


def _snapshot(stream: Any) -> Message | None:
    try:
        return stream.current_message_snapshot  # type: ignore[no-any-return]
    except AssertionError:  # nothing arrived yet
        return None


class _StreamBase:
    """What the sync and async streams share: the call they belong to, and how a stream ends.

    A stream that owns its call (made by `messages.stream`) writes the call's record; one made inside a
    larger call (`messages.create(mode="stream")`) leaves that to the call, and raises what broke it as it is.
    """

    def __init__(
        self, call: Call, params: dict[str, Any], on_interrupt: OnInterrupt, owns_call: bool, max_resumes: int
    ) -> None:
        self._call = call
        self._owns_call = owns_call
        self._core = _StreamCore(dict(params), call, on_interrupt, max_resumes, owns_call)
        self._token: Any = None
        self._recorded = False  # the call record is written (finished, failed, or left early)
        self.reply: Reply | None = None

    @property
    def request_id(self) -> str | None:
        return self._core.request_id

    def _enter(self) -> None:
        if self._owns_call:
            self._token = CURRENT_CALL.set(self._call)

    def _exit(self) -> None:
        if self._owns_call and not self._recorded and self._call.rounds:  # left before its end: still recorded
            self._recorded = True
            self._call.abandoned(self._core.snapshot)
        if self._token is not None:
            CURRENT_CALL.reset(self._token)
            self._token = None

    def _failed(self, err: BaseException) -> BaseException:
        """What to raise for a stream that failed: its own `CallFailed` (or `StreamInterrupted`) when the stream
        is a call of its own; the error itself inside a larger call, which records the failure."""
        if not self._owns_call:
            return err
        self._recorded = True
        failed = self._call.failed(err)
        return err if isinstance(err, StreamInterrupted) else failed

    def _finished(self) -> None:
        assert self._core.final is not None
        if self._owns_call:
            self._recorded = True
            self.reply = self._call.succeeded([self._core.final])


class ResilientStream(_StreamBase):
    """The SDK's `messages.stream()`, resilient: use it as a context manager, iterate its events or
    `text_stream`, then `get_final_message()` (or `until_done()`). `reply` holds the `Reply` once it ended.

    Made by `keel.Client.messages.stream(...)`: `sdk` is keel's SDK client for the call's policy, `call` the
    call it streams for.
    """

    def __init__(
        self,
        sdk: anthropic.Anthropic,
        call: Call,
        params: dict[str, Any],
        on_interrupt: OnInterrupt = "raise",
        *,
        owns_call: bool = True,
        max_resumes: int = MAX_RESUMES,
    ) -> None:
        super().__init__(call, params, on_interrupt, owns_call, max_resumes)
        self._sdk = sdk
        self._iterator = self._events()

    @property
    def text_stream(self) -> Iterator[str]:
        """The answer's text, as it arrives."""
        return (event.text for event in self if event.type == "text")

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
            time.sleep(first_stream_restart_wait(self._call.policy))
            yield from Retrying(**stream_restarts(self._call.policy))

    def _open(self, opened: ExitStack, params: dict[str, Any]) -> Any:
        """The SDK's stream of a round, entered on `opened`. A background policy rides out the errors that keep it
        from opening (the SDK's retries spent on a 529 storm) with keel's rounds, as `create` does (inside a larger
        call, the call's own rounds do)."""
        rounds = noticed_rounds(self._call.policy) if self._owns_call else None
        if rounds is None:
            return opened.enter_context(self._sdk.messages.stream(**params))
        return Retrying(**rounds)(lambda: opened.enter_context(self._sdk.messages.stream(**params)))

    def _events(self) -> Generator[Any, None, None]:
        core = self._core
        try:
            while True:
                for attempt in self._attempts():
                    with attempt:
                        snapshot, error = None, None
                        with ExitStack() as opened:
                            stream = self._open(opened, core.round.params)
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
                        if self._call.pacing is not None:
                            self._call.pacing.settle(snapshot.usage if snapshot is not None else None)
                        if (tail := core.pending()) is not None:
                            yield tail
                        done = core.end_round(snapshot, error)
                if done:
                    break
        except CALL_ERRORS as err:
            failed = self._failed(err)
            if failed is err:
                raise
            raise failed from err
        self._finished()

    def get_final_message(self) -> Message:
        """Read the stream to its end; the whole answer as one message."""
        for _ in self:
            pass
        assert self._core.final is not None
        return self._core.final

    def until_done(self) -> None:
        """Read the stream to its end."""
        self.get_final_message()


class AsyncResilientStream(_StreamBase):
    """The async twin of `ResilientStream`: `async with`, iterate events or `text_stream`, then
    `await get_final_message()` (or `await until_done()`)."""

    def __init__(
        self,
        sdk: anthropic.AsyncAnthropic,
        call: Call,
        params: dict[str, Any],
        on_interrupt: OnInterrupt = "raise",
        *,
        owns_call: bool = True,
        max_resumes: int = MAX_RESUMES,
    ) -> None:
        super().__init__(call, params, on_interrupt, owns_call, max_resumes)
        self._sdk = sdk
        self._iterator = self._events()

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The answer's text, as it arrives."""
        return (event.text async for event in self if event.type == "text")

    async def __aenter__(self) -> AsyncResilientStream:
        self._enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._iterator.aclose()
        pacing = self._call.pacing
        if pacing is not None and self._owns_call and not self._recorded:  # left early: settle without blocking
            snapshot = self._core.snapshot
            await pacing.settle_async(snapshot.usage if snapshot is not None else None)
        self._exit()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def _attempts(self) -> AsyncIterator[AbstractContextManager[Any]]:
        first = _FirstAttempt()
        yield first
        if first.failed:
            await asyncio.sleep(first_stream_restart_wait(self._call.policy))
            async for attempt in AsyncRetrying(**stream_restarts(self._call.policy)):
                yield attempt

    async def _open(self, opened: AsyncExitStack, params: dict[str, Any]) -> Any:
        """The SDK's stream of a round, entered on `opened` (see `ResilientStream._open`)."""
        rounds = noticed_rounds(self._call.policy) if self._owns_call else None
        if rounds is None:
            return await opened.enter_async_context(self._sdk.messages.stream(**params))

        async def enter() -> Any:
            return await opened.enter_async_context(self._sdk.messages.stream(**params))

        return await AsyncRetrying(**rounds)(enter)

    async def _events(self) -> AsyncGenerator[Any, None]:
        core = self._core
        try:
            while True:
                async for attempt in self._attempts():
                    with attempt:
                        snapshot, error = None, None
                        async with AsyncExitStack() as opened:
                            stream = await self._open(opened, core.round.params)
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
                        if self._call.pacing is not None:
                            await self._call.pacing.settle_async(snapshot.usage if snapshot is not None else None)
                        if (tail := core.pending()) is not None:
                            yield tail
                        done = core.end_round(snapshot, error)
                if done:
                    break
        except CALL_ERRORS as err:
            failed = self._failed(err)
            if failed is err:
                raise
            raise failed from err
        self._finished()

    async def get_final_message(self) -> Message:
        """Read the stream to its end; the whole answer as one message."""
        async for _ in self:
            pass
        assert self._core.final is not None
        return self._core.final

    async def until_done(self) -> None:
        """Read the stream to its end."""
        await self.get_final_message()
