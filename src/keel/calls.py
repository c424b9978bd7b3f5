"""Per-call state and the SDK middleware that records every HTTP attempt.

The middleware runs inside the SDK's retry loop, once per attempt, and sees every response, 4xx/5xx
included. It writes an `AttemptRecord` for each, and steers the SDK's own retry decision with the SDK's
own mechanism: a response keel must not retry (a spend cap, or a wait that would overrun an interactive
deadline) gets `x-should-retry: false`, and the SDK then raises its typed error instead of retrying.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import secrets
import time
from contextvars import ContextVar
from typing import Any

import anthropic
import httpx2
from anthropic._middleware import AsyncCallNext, CallNext, Middleware
from anthropic._request import APIRequest
from anthropic._response import APIResponse, AsyncAPIResponse

from .errors import classify, classify_exception
from .policy import RetryPolicy
from .records import AttemptRecord, DeferredCallRecord, Record, Recorder

CURRENT_CALL: ContextVar[CallState | None] = ContextVar("keel_call", default=None)
"""The keel call in progress in this context: what the middleware records each attempt on."""


class DeadlineExceeded(Exception):
    """The interactive deadline ran out before another attempt could be made."""


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


def retry_after_seconds(headers: httpx2.Headers) -> float | None:
    """The server's requested wait, as the SDK reads it: retry-after-ms, then retry-after (seconds or date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


class CallState:
    """What one keel call has seen so far: its attempts, rounds and first-token time.

    A plain slotted class: one is made per call, on the hot path.
    """

    __slots__ = (
        "attempts",
        "call_id",
        "deadline_at",
        "deadline_hit",
        "held",
        "policy",
        "recorder",
        "rounds",
        "started",
        "ttft_ms",
    )

    def __init__(self, policy: RetryPolicy, recorder: Recorder) -> None:
        self.call_id = new_call_id()
        self.policy = policy
        self.recorder = recorder
        self.started = time.monotonic()
        self.deadline_at: float | None = None if policy.deadline is None else self.started + policy.deadline
        self.attempts: list[AttemptRecord] = []
        self.held: list[AttemptRecord] = []  # successful attempts, written with the call record
        self.rounds = 0
        self.ttft_ms: float | None = None
        self.deadline_hit = False

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()

    def check_deadline(self) -> None:
        deadline = self.deadline_at
        if deadline is not None and time.monotonic() >= deadline:
            self.deadline_hit = True
            raise DeadlineExceeded(f"the {self.policy.name} deadline of {self.policy.deadline:g} s ran out")

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
        return record

    def emit_call(self, record: Record | DeferredCallRecord) -> None:
        """The call record, with the attempt records held until now, in one write."""
        held, self.held = self.held, []
        self.recorder.emit(*held, record)

    def attempt_succeeded(self, request: APIRequest, response: httpx2.Response, started: float) -> None:
        """A 2xx attempt: held, and written with the call record in one go (the common case, kept short)."""
        self.held.append(self._attempt(request, started, response.headers.get("request-id"), response.status_code))

    def attempt_failed(self, request: APIRequest, err: BaseException, started: float) -> None:
        """No response (a connection error or timeout): written at once, like every error."""
        self.recorder.emit(self._attempt(request, started, error_class=classify_exception(err).name))

    def attempt_errored(self, request: APIRequest, response: httpx2.Response, body: bytes, started: float) -> None:
        """An error response: classified, written at once, and the SDK told whether it may retry."""
        error_type, error_code, message = _error_fields(body)
        error = classify(response.status_code, error_type, error_code, message)
        if not error.retryable or self._would_overrun(response):
            response.headers["x-should-retry"] = "false"
        request_id = response.headers.get("request-id")
        self.recorder.emit(
            self._attempt(request, started, request_id, response.status_code, error_type, error_code, error.name)
        )

    def _would_overrun(self, response: httpx2.Response) -> bool:
        deadline = self.deadline_at
        if deadline is None:
            return False
        wait = retry_after_seconds(response.headers) or 0.0
        if time.monotonic() + wait >= deadline:
            self.deadline_hit = True
            return True
        return False


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = json.loads(body)
        error = data["error"]
        details = error.get("details") or {}
        return error.get("type"), details.get("error_code"), error.get("message")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, None


class AttemptMiddleware(Middleware):
    """Installed on keel's copy of the SDK client; a pass-through for calls made outside keel."""

    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        state = CURRENT_CALL.get()
        if state is None:
            return call_next(request)
        state.check_deadline()
        started = time.perf_counter()
        try:
            response = call_next(request)
        except anthropic.APIConnectionError as err:
            state.attempt_failed(request, err, started)
            raise
        http = response.http_response
        if 200 <= http.status_code < 300:
            state.attempt_succeeded(request, http, started)
        else:
            state.attempt_errored(request, http, http.read(), started)
        return response

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        state = CURRENT_CALL.get()
        if state is None:
            return await call_next(request)
        state.check_deadline()
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except anthropic.APIConnectionError as err:
            state.attempt_failed(request, err, started)
            raise
        http = response.http_response
        if 200 <= http.status_code < 300:
            state.attempt_succeeded(request, http, started)
        else:
            state.attempt_errored(request, http, await http.aread(), started)
        return response
