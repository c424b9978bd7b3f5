"""Per-call state and the SDK middleware that records every HTTP attempt.

The middleware runs inside the SDK's retry loop, once per attempt, and sees every response, 4xx/5xx
included. It writes an `AttemptRecord` for each, and steers the SDK's own retry decision with the SDK's
own mechanism: a response keel must not retry (a spend cap, or a wait that would overrun an interactive
deadline) gets `x-should-retry: false`, and the SDK then raises its typed error instead of retrying.
"""

from __future__ import annotations

import email.utils
import json
import secrets
import time
from contextvars import ContextVar, Token
from typing import Any

import anthropic
import httpx2
from anthropic._middleware import AsyncCallNext, CallNext, Middleware
from anthropic._request import APIRequest
from anthropic._response import APIResponse, AsyncAPIResponse

from .errors import ErrorClass, classify, classify_exception
from .policy import RetryPolicy
from .records import AttemptRecord, Record, Recorder

_CURRENT: ContextVar[CallState | None] = ContextVar("keel_call", default=None)


class DeadlineExceeded(Exception):
    """The interactive deadline ran out before another attempt could be made."""


def new_call_id() -> str:
    return "call_" + secrets.token_hex(8)


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

    def __init__(self, call_id: str, policy: RetryPolicy, recorder: Recorder) -> None:
        self.call_id = call_id
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

    def _add(
        self,
        request: APIRequest,
        started: float,
        *,
        request_id: str | None = None,
        status: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        error_class: str | None = None,
    ) -> None:
        record = AttemptRecord(
            call_id=self.call_id,
            attempt=len(self.attempts) + 1,
            retry_count=request.retries_taken,
            endpoint=request.options.url,
            request_id=request_id,
            status=status,
            error_type=error_type,
            error_code=error_code,
            error_class=error_class,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        self.attempts.append(record)
        if status is not None and error_class is None:
            self.held.append(record)  # one write with the call record; errors are written as they happen
        else:
            self.recorder.emit(record)

    def emit_call(self, record: Record) -> None:
        """The call record, with the attempt records held until now, in one write."""
        held, self.held = self.held, []
        self.recorder.emit(*held, record)

    def attempt_failed(self, request: APIRequest, err: BaseException, started: float) -> None:
        self._add(request, started, error_class=classify_exception(err).name)

    def attempt_answered(
        self, request: APIRequest, response: httpx2.Response, body: bytes | None, started: float
    ) -> None:
        """Record an attempt that got a response; for error bodies, decide whether the SDK may retry."""
        error: ErrorClass | None = None
        error_type = error_code = None
        if body is not None:
            error_type, error_code, message = _error_fields(body)
            error = classify(response.status_code, error_type, error_code, message)
            if not error.retryable or self._would_overrun(response):
                response.headers["x-should-retry"] = "false"
        self._add(
            request,
            started,
            request_id=response.headers.get("request-id"),
            status=response.status_code,
            error_type=error_type,
            error_code=error_code,
            error_class=error.name if error else None,
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


def current_call() -> CallState | None:
    return _CURRENT.get()


def enter_call(state: CallState) -> Token[CallState | None]:
    return _CURRENT.set(state)


def leave_call(token: Token[CallState | None]) -> None:
    _CURRENT.reset(token)


class AttemptMiddleware(Middleware):
    """Installed on keel's copy of the SDK client; a pass-through for calls made outside keel."""

    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        state = _CURRENT.get()
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
        body = None if http.is_success else http.read()
        state.attempt_answered(request, http, body, started)
        return response

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        state = _CURRENT.get()
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
        body = None if http.is_success else await http.aread()
        state.attempt_answered(request, http, body, started)
        return response
