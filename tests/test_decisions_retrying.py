"""Retrying by value: the shipped policies, the server's retry-after, the deadline, and keel's two backoff curves.

Expected values come from the documented policies (README "Errors and retries", the `keel._retrying` and
`RetryPolicy` docstrings) and, for retry-after, from the SDK's own reading of the headers.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import anthropic
import httpx2
import pytest
from keel_helpers import ask, fault, keel_client
from tenacity import RetryCallState, Retrying

import keel
from keel import BACKGROUND, INTERACTIVE, DeadlineExceeded, RetryPolicy
from keel import _retrying as retrying
from keel._error_map import by_name
from keel._exceptions import BrokeBeforeContent
from keel.emulator import Emulator

# --- the shipped policies -------------------------------------------------------------------------------------


def test_interactive_is_two_sdk_retries_of_60_s_attempts_inside_a_60_s_deadline_and_no_rounds() -> None:
    documented = RetryPolicy(
        "interactive", max_retries=2, timeout=60.0, deadline=60.0, budget=None, backoff_base=1.0, backoff_cap=60.0
    )
    assert documented == INTERACTIVE


def test_background_is_four_sdk_retries_of_600_s_attempts_then_rounds_for_15_minutes_without_deadline() -> None:
    documented = RetryPolicy(
        "background", max_retries=4, timeout=600.0, deadline=None, budget=900.0, backoff_base=1.0, backoff_cap=60.0
    )
    assert documented == BACKGROUND


def test_a_policy_of_your_own_has_no_deadline_no_rounds_and_the_1_s_to_60_s_curve() -> None:
    mine = RetryPolicy("mine", max_retries=1, timeout=5.0)
    assert (mine.deadline, mine.budget, mine.backoff_base, mine.backoff_cap) == (None, None, 1.0, 60.0)


def test_policies_are_found_by_name_and_a_policy_is_used_as_it_is() -> None:
    assert retrying.policy_named("interactive") is INTERACTIVE
    assert retrying.policy_named("background") is BACKGROUND
    mine = RetryPolicy("mine", max_retries=1, timeout=5.0)
    assert retrying.policy_named(mine) is mine


def test_an_unknown_policy_name_lists_the_known_ones(keel_emulator: Emulator) -> None:
    with pytest.raises(ValueError, match=r"expected one of interactive, background or a RetryPolicy, got 'nightly'"):
        keel_client(keel_emulator, policy="nightly")


def test_an_interactive_call_makes_three_attempts_of_an_overload_storm_then_fails(keel_emulator: Emulator) -> None:
    claude = keel_client(keel_emulator)  # interactive by default
    with pytest.raises(keel.CallFailed) as caught:
        claude.messages.create(
            model="claude-haiku-5-5",
            max_tokens=20,
            messages=ask("hi"),
            extra_headers=fault("status=529; times=10; retry_after_ms=1"),
        )
    assert caught.value.record.attempts == 3  # the first attempt and the SDK's two retries
    assert caught.value.record.policy == "interactive" and caught.value.error_class.name == "overloaded"


def test_a_background_call_rides_out_more_overloads_than_the_sdk_retries(keel_emulator: Emulator) -> None:
    claude = keel_client(keel_emulator, policy=RetryPolicy("quick", max_retries=4, timeout=10.0, budget=30.0,
                                                           backoff_base=0.001, backoff_cap=0.01))  # fmt: skip
    keel_emulator.inject("status=529; retry_after_ms=1", limit=7)
    reply = claude.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=ask("hi"))
    assert reply.record.attempts == 8  # a first round of 5 attempts (4 SDK retries), then a second round of 3


# --- retry-after, as the SDK reads it --------------------------------------------------------------------------


def _sdk_retry_after(headers: httpx2.Headers) -> float | None:
    sdk = anthropic.Anthropic(api_key="unused")
    try:
        return sdk._parse_retry_after_header(headers)
    finally:
        sdk.close()


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise header wins
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # an unreadable ms header is skipped
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "tomorrow"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_as_the_sdk_reads_it(headers: dict[str, str], seconds: float | None) -> None:
    assert retrying.retry_after_seconds(httpx2.Headers(headers)) == seconds
    assert _sdk_retry_after(httpx2.Headers(headers)) == seconds


def test_a_retry_after_date_is_the_seconds_until_then() -> None:
    in_30_s = email.utils.formatdate(time.time() + 30, usegmt=True)
    waited = retrying.retry_after_seconds(httpx2.Headers({"retry-after": in_30_s}))
    assert waited is not None and 28 <= waited <= 30


def test_a_retry_after_date_in_the_past_means_no_wait() -> None:
    past = email.utils.formatdate(time.time() - 120, usegmt=True)
    assert retrying.retry_after_seconds(httpx2.Headers({"retry-after": past})) == 0.0


# --- the deadline ----------------------------------------------------------------------------------------------


@dataclass
class Clock:
    """Stands in for the `time` module inside keel._retrying: a monotonic clock the test moves."""

    now: float = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(retrying, "time", fake)
    yield fake


def test_the_deadline_allows_attempts_until_it_is_reached(clock: Clock) -> None:
    deadline = retrying.Deadline(INTERACTIVE, started=clock.now)
    clock.now += 59.999
    deadline.check()
    assert deadline.hit is False
    clock.now += 0.001  # exactly 60 s after the start: no time is left
    with pytest.raises(DeadlineExceeded, match=r"^the interactive deadline of 60 s ran out$"):
        deadline.check()
    assert deadline.hit


def test_a_retry_after_that_reaches_the_deadline_is_not_waited_for(clock: Clock) -> None:
    deadline = retrying.Deadline(INTERACTIVE, started=clock.now)
    clock.now += 50.0
    assert deadline.allows_retry_after(httpx2.Headers({"retry-after": "9.5"}))
    assert deadline.allows_retry_after(httpx2.Headers({}))  # no retry-after: the retry itself still fits
    assert not deadline.hit
    assert not deadline.allows_retry_after(httpx2.Headers({"retry-after": "10"}))  # would land on the deadline
    assert deadline.hit


def test_no_retry_after_at_the_deadline_leaves_no_time(clock: Clock) -> None:
    deadline = retrying.Deadline(INTERACTIVE, started=clock.now)
    clock.now += 59.5
    assert deadline.allows_retry_after(httpx2.Headers({}))  # half a second is enough for a retry without a wait
    clock.now += 0.5
    assert not deadline.allows_retry_after(httpx2.Headers({}))
    assert deadline.hit


# --- keel's rounds (background) --------------------------------------------------------------------------------


@dataclass
class UpperBound:
    """Stands in for `random`: uniform(a, b) returns `b` (or `a` with low=True) and remembers what it was given."""

    low: bool = False
    calls: list[tuple[float, float]] = field(default_factory=list)

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a if self.low else b


def _state(attempt: int = 1, error: BaseException | None = None, seconds: float = 0.0) -> RetryCallState:
    """A tenacity state after `attempt` attempts, the last one raising `error`, `seconds` after the first began."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt
    if error is not None:
        state.set_exception((type(error), error, None))
    state.start_time, state.outcome_timestamp = 0.0, seconds  # exact: no float sum with the monotonic clock
    return state


def _status_error(status: int, headers: dict[str, str] | None = None) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "https://api.example.invalid/v1/messages")
    response = httpx2.Response(status, headers=headers, request=request)
    return anthropic.APIStatusError("error", response=response, body=None)


def test_a_policy_without_a_budget_has_no_rounds() -> None:
    assert retrying.background_rounds(INTERACTIVE) is None


def test_rounds_stop_once_the_15_minute_budget_is_spent() -> None:
    rounds = retrying.background_rounds(BACKGROUND)
    assert rounds is not None
    assert not rounds["stop"](_state(attempt=50, seconds=899.9))
    assert rounds["stop"](_state(attempt=2, seconds=900.0))


def test_rounds_wait_up_to_1_s_doubling_each_round_capped_at_60_s(monkeypatch: pytest.MonkeyPatch) -> None:
    random = UpperBound()
    monkeypatch.setattr(retrying, "random", random)
    rounds = retrying.background_rounds(BACKGROUND)
    assert rounds is not None
    waits = [rounds["wait"](_state(attempt=n, error=_status_error(529))) for n in range(1, 9)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert {low for low, _ in random.calls} == {0}  # full jitter: anywhere from no wait at all


def test_rounds_never_wait_less_than_the_servers_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrying, "random", UpperBound(low=True))
    rounds = retrying.background_rounds(BACKGROUND)
    assert rounds is not None
    limited = _status_error(429, {"retry-after": "90"})
    assert rounds["wait"](_state(attempt=1, error=limited)) == 90.0  # above the 60 s cap too
    assert rounds["wait"](_state(attempt=1, error=_status_error(529))) == 0.0
    assert rounds["wait"](_state(attempt=1, error=anthropic.APIConnectionError(request=limited.request))) == 0.0
    assert rounds["wait"](_state(attempt=1)) == 0.0  # a state without an outcome


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (_status_error(529), True),
        (_status_error(429), True),
        (_status_error(400), False),
        (DeadlineExceeded("the interactive deadline of 60 s ran out"), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_rounds_retry_only_retryable_errors_and_never_a_spent_deadline(error: BaseException, retried: bool) -> None:
    rounds = retrying.background_rounds(BACKGROUND)
    assert rounds is not None
    assert rounds["retry"](_state(error=error)) is retried


def test_rounds_raise_the_last_error_itself() -> None:
    rounds = retrying.background_rounds(RetryPolicy("quick", max_retries=0, timeout=1.0, budget=0.0))
    assert rounds is not None
    calls: list[int] = []

    def overloaded() -> None:
        calls.append(1)
        raise _status_error(529)

    with pytest.raises(anthropic.APIStatusError):
        Retrying(**rounds)(overloaded)
    assert calls == [1]


# --- restarting a stream that broke before any content ---------------------------------------------------------

BROKE = BrokeBeforeContent(by_name("mid_stream"), None)


def test_interactive_restarts_a_stream_twice_within_its_deadline() -> None:
    stop = retrying.stream_restarts(INTERACTIVE)["stop"]
    assert not stop(_state(attempt=1, error=BROKE, seconds=1.0))
    assert stop(_state(attempt=2, error=BROKE, seconds=1.0))  # max_retries=2 restarts
    assert stop(_state(attempt=1, error=BROKE, seconds=60.0))  # or the 60 s deadline


def test_background_restarts_a_stream_until_its_budget_is_spent_however_many_times() -> None:
    stop = retrying.stream_restarts(BACKGROUND)["stop"]
    assert not stop(_state(attempt=100, error=BROKE, seconds=899.0))
    assert stop(_state(attempt=2, error=BROKE, seconds=900.0))


def test_a_policy_without_retries_or_limits_still_restarts_a_stream_once() -> None:
    stop = retrying.stream_restarts(RetryPolicy("none", max_retries=0, timeout=1.0))["stop"]
    assert stop(_state(attempt=1, error=BROKE, seconds=0.0))
    three = retrying.stream_restarts(RetryPolicy("three", max_retries=3, timeout=1.0))["stop"]
    assert not three(_state(attempt=2, error=BROKE, seconds=1e6))  # no deadline: only the count
    assert three(_state(attempt=3, error=BROKE))


def test_stream_restarts_wait_a_quarter_second_doubling_up_to_the_policys_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    random = UpperBound()
    monkeypatch.setattr("tenacity.wait.random", random)
    wait = retrying.stream_restarts(RetryPolicy("capped", max_retries=9, timeout=1.0, backoff_cap=1.5))["wait"]
    assert [wait(_state(attempt=n, error=BROKE)) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert {low for low, _ in random.calls} == {0}


def test_the_first_stream_restart_waits_at_most_a_quarter_second_or_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    random = UpperBound()
    monkeypatch.setattr(retrying, "random", random)
    assert retrying.first_stream_restart_wait(BACKGROUND) == 0.25
    assert retrying.first_stream_restart_wait(RetryPolicy("tight", max_retries=1, timeout=1.0, backoff_cap=0.1)) == 0.1
    assert random.calls == [(0, 0.25), (0, 0.1)]


def test_only_a_stream_that_broke_before_content_is_restarted_and_the_last_error_is_raised() -> None:
    settings = retrying.stream_restarts(INTERACTIVE)
    assert settings["retry"](_state(error=BROKE))
    assert not settings["retry"](_state(error=_status_error(529)))  # anything else is the call's to handle
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise BrokeBeforeContent(by_name("mid_stream"), None)

    with pytest.raises(BrokeBeforeContent):
        Retrying(**{**settings, "wait": lambda state: 0.0})(broken)
    assert len(calls) == 2
