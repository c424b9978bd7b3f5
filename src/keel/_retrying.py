"""Retrying, in one place: the policies, the server's retry-after, the deadline, and keel's two backoff curves.

The SDK's own retry loop makes the HTTP attempts of a request (`max_retries`, its own backoff, `retry-after`).
keel adds only what it cannot decide:

- `interactive` — someone is waiting: the SDK's few retries inside a total deadline; a retry whose
  `retry-after` would overrun the deadline is not attempted; the call fails fast with a clear error.
- `background` — bulk work: after the SDK's retries are spent on a retryable error, keel starts another
  round (tenacity), with exponential backoff and full jitter, never sooner than the server's `retry-after`,
  until the retry budget (minutes) is spent. 429/529 storms are ridden out instead of failing the job.

A stream that breaks before any content is repeated by keel itself (the SDK does not retry a broken stream);
that has a curve of its own, see `stream_restarts`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx2
from tenacity import (
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ._error_map import classify_exception
from ._exceptions import BrokeBeforeContent, DeadlineExceeded


@dataclass(frozen=True)
class RetryPolicy:
    """How long a call may keep trying, and how.

    Attributes:
        name: "interactive", "background" or a name of your own (it is written in every call record).
        max_retries: the SDK's own retries of one request (its `max_retries`).
        timeout: seconds per attempt (the SDK's request timeout).
        deadline: seconds for the whole call, retries included; None for no deadline.
        budget: seconds of keel's rounds on top of the SDK's retries (background work); None for no rounds.
        backoff_base: keel's rounds wait a random time in [0, min(backoff_cap, backoff_base * 2**round)].
        backoff_cap: the longest of those waits, in seconds.
    """

    name: str
    max_retries: int
    timeout: float
    deadline: float | None = None
    budget: float | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 60.0


INTERACTIVE = RetryPolicy("interactive", max_retries=2, timeout=60.0, deadline=60.0)
BACKGROUND = RetryPolicy("background", max_retries=4, timeout=600.0, budget=900.0)
POLICIES = {policy.name: policy for policy in (INTERACTIVE, BACKGROUND)}


def policy_named(policy: str | RetryPolicy) -> RetryPolicy:
    if isinstance(policy, RetryPolicy):
        return policy
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(f"policy: expected one of {', '.join(POLICIES)} or a RetryPolicy, got {policy!r}") from None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait, as the SDK reads it: `retry-after-ms`, else `retry-after` (seconds or an HTTP
    date); None when neither is there or readable. Never negative. `headers` with lower-case names, or any case
    for `httpx.Headers`."""
    try:
        seconds = float(headers["retry-after-ms"]) / 1000
    except (KeyError, ValueError):
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class Deadline:
    """A call's deadline: checked before each attempt, and before the SDK waits out a `retry-after`."""

    __slots__ = ("at", "hit", "policy")

    def __init__(self, policy: RetryPolicy, started: float) -> None:
        assert policy.deadline is not None
        self.policy = policy
        self.at = started + policy.deadline
        self.hit = False  # the deadline, not the error itself, ended the retries

    def check(self) -> None:
        """Raise `DeadlineExceeded` when no time is left for another attempt."""
        if time.monotonic() >= self.at:
            self.hit = True
            raise DeadlineExceeded(f"the {self.policy.name} deadline of {self.policy.deadline:g} s ran out")

    def allows_retry_after(self, headers: httpx2.Headers) -> bool:
        """Whether waiting the response's `retry-after` still leaves time for the retry."""
        if time.monotonic() + (retry_after_seconds(headers) or 0.0) >= self.at:
            self.hit = True
            return False
        return True


def _retryable(err: BaseException) -> bool:
    return not isinstance(err, DeadlineExceeded) and classify_exception(err).retryable


def _full_jitter(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """Exponential backoff with full jitter, never shorter than the server's retry-after."""

    def wait(state: RetryCallState) -> float:
        cap = min(policy.backoff_cap, policy.backoff_base * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, cap)
        outcome = state.outcome
        err = outcome.exception() if outcome is not None else None
        response = getattr(err, "response", None)
        floor = retry_after_seconds(response.headers) if response is not None else None
        return max(delay, floor or 0.0)

    return wait


def background_rounds(policy: RetryPolicy) -> dict[str, Any] | None:
    """tenacity settings for keel's rounds around the SDK's retries; None for a policy without rounds.

    The curve is long (base 1 s, cap 60 s by default) because each round follows the SDK's own retries, which
    already failed several times in a row: the API is overloaded or limiting, and hammering it helps no one.
    """
    if policy.budget is None:
        return None
    return {
        "stop": stop_after_delay(policy.budget),
        "wait": _full_jitter(policy),
        "retry": retry_if_exception(_retryable),
        "reraise": True,
    }


STREAM_RESTART_MULTIPLIER = 0.25
"""Seconds: the scale of the waits between restarts of a stream that broke before any content."""


def stream_restarts(policy: RetryPolicy) -> dict[str, Any]:
    """tenacity settings for restarting a stream that broke before any content (the attempts after the first).

    The curve starts at a quarter of a second, much shorter than `background_rounds`, because nothing has
    retried this yet: the SDK does not retry a stream that broke after its 200, and a mid-stream error is
    usually a passing one. The policy's retries, deadline or budget bound it.
    """
    stop: stop_base = stop_after_attempt(max(1, policy.max_retries))
    if policy.budget is not None:
        stop = stop_after_delay(policy.budget)
    elif policy.deadline is not None:
        stop = stop_any(stop, stop_after_delay(policy.deadline))
    return {
        "stop": stop,
        "wait": wait_random_exponential(multiplier=STREAM_RESTART_MULTIPLIER, max=policy.backoff_cap),
        "retry": retry_if_exception_type(BrokeBeforeContent),
        "reraise": True,
    }


def first_stream_restart_wait(policy: RetryPolicy) -> float:
    """The wait before a stream's first restart: the first wait of `stream_restarts`' curve.

    The first attempt of a stream runs without tenacity, so the common case costs nothing extra; tenacity
    takes over only once it broke."""
    return random.uniform(0, min(STREAM_RESTART_MULTIPLIER, policy.backoff_cap))
