"""What the limiter is told (keel.ratelimit.limits): the per-minute window, the checks on limits, adaptation and
reservations at their bounds, and the shipped adaptation by value and by behaviour (docs/ratelimit.md: "a 429
halves the rate (never below 0.05) and pauses for retry-after, at most 60 s; a 2xx adds 0.05: ten successes undo
one 429")."""

from __future__ import annotations

import pytest
from ratelimit_helpers import Clock

from keel.ratelimit import (
    API_WINDOW,
    Adaptation,
    Limits,
    LocalBackend,
    RateLimiter,
    Reservation,
    estimate_input_tokens,
)

MODEL = "claude-sonnet-5"


def test_the_api_window_is_a_minute_and_limits_refill_their_limit_over_it() -> None:
    assert API_WINDOW == 60.0
    limits = Limits(requests=60, input_tokens=6_000, output_tokens=600)
    assert limits.per == 60.0
    spec = limits.spec()
    assert tuple(spec.capacities) == (60, 6_000, 600)
    assert tuple(spec.rates) == (1.0, 100.0, 10.0)
    assert tuple(Limits(requests=60, input_tokens=6_000, output_tokens=600, per=2).spec().rates) == (30, 3_000, 300)


@pytest.mark.parametrize(
    "fields",
    [
        {"requests": 0},
        {"input_tokens": 0},
        {"output_tokens": 0},
        {"requests": -1},
        {"per": 0},
        {"per": -1.0},
    ],
)
def test_a_limit_under_one_or_a_window_not_above_zero_is_refused(fields: dict[str, float]) -> None:
    values: dict[str, float] = {"requests": 1, "input_tokens": 1, "output_tokens": 1, "per": 60.0} | fields
    with pytest.raises(ValueError, match="must be positive"):
        Limits(**values)  # type: ignore[arg-type]


def test_the_smallest_limits_and_a_short_window_are_accepted() -> None:
    limits = Limits(requests=1, input_tokens=1, output_tokens=1, per=0.001)
    assert tuple(limits.spec().capacities) == (1, 1, 1)


def test_the_shipped_adaptation_is_the_documented_one() -> None:
    shipped = Adaptation()
    assert (shipped.decrease, shipped.increase, shipped.floor, shipped.max_pause) == (0.5, 0.05, 0.05, 60.0)
    assert shipped.throttle_statuses == {429, 529}
    assert RateLimiter(Limits(requests=1, input_tokens=1, output_tokens=1)).adaptation == shipped


def factor_after(*statuses: int) -> float:
    limiter = RateLimiter(Limits(requests=60, input_tokens=6_000, output_tokens=600), backend=LocalBackend(Clock()))
    for status in statuses:
        limiter.observe(MODEL, {}, status)
    return limiter.snapshot(MODEL).factor


def test_by_default_one_429_halves_the_rate_and_ten_successes_restore_it() -> None:
    assert factor_after(429) == 0.5
    assert factor_after(429, *[200] * 9) == pytest.approx(0.95)
    assert factor_after(429, *[200] * 10) == pytest.approx(1.0)
    assert factor_after(429, *[200] * 11) == pytest.approx(1.0)  # never above 1


def test_by_default_an_overloaded_529_throttles_like_a_429_and_other_errors_do_not() -> None:
    assert factor_after(529) == 0.5
    for status in (400, 500, 503):
        assert factor_after(status) == 1.0


def test_by_default_the_rate_never_falls_below_a_twentieth() -> None:
    assert factor_after(*[429] * 4) == 0.0625
    assert factor_after(*[429] * 5) == pytest.approx(0.05)
    assert factor_after(*[429] * 10) == pytest.approx(0.05)


@pytest.mark.parametrize(("retry_after", "pause"), [("59", 59.0), ("60", 60.0), ("61", 60.0), ("3600", 60.0)])
def test_by_default_a_throttling_pause_is_the_retry_after_up_to_a_minute(retry_after: str, pause: float) -> None:
    limiter = RateLimiter(Limits(requests=1, input_tokens=1, output_tokens=1), backend=LocalBackend(Clock()))
    limiter.observe(MODEL, {"retry-after": retry_after}, 429)
    assert limiter.snapshot(MODEL).paused_for == pause


@pytest.mark.parametrize(
    "fields",
    [{"decrease": 0}, {"decrease": 1.01}, {"increase": -0.01}, {"floor": 0}, {"floor": 1.01}, {"max_pause": -1}],
)
def test_an_adaptation_out_of_its_range_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Adaptation(**fields)  # type: ignore[arg-type]


def test_the_ends_of_the_adaptations_ranges_are_accepted() -> None:
    unchanging = Adaptation(decrease=1, increase=0, floor=1, max_pause=0)  # a limiter that never adapts
    assert (unchanging.decrease, unchanging.increase, unchanging.floor, unchanging.max_pause) == (1, 0, 1, 0)


@pytest.mark.parametrize(("input_tokens", "output_tokens"), [(-1, 0), (0, -1)])
def test_a_reservation_of_negative_tokens_is_refused(input_tokens: int, output_tokens: int) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        Reservation(MODEL, input_tokens, output_tokens)


def test_a_reservation_of_no_tokens_is_one_request() -> None:
    assert (Reservation(MODEL, 0, 0).input_tokens, Reservation(MODEL, 0, 0).output_tokens) == (0, 0)


def test_a_reservation_for_a_request_reserves_max_tokens_and_an_exact_count_even_of_zero() -> None:
    messages = [{"role": "user", "content": "Count me."}]
    exact = Reservation.for_request(MODEL, messages, max_tokens=700, input_tokens=0)
    assert (exact.model, exact.input_tokens, exact.output_tokens) == (MODEL, 0, 700)
    system, tools = "Be brief.", [{"name": "f", "input_schema": {}}]
    estimated = Reservation.for_request(MODEL, messages, max_tokens=700, system=system, tools=tools)
    assert estimated.input_tokens == estimate_input_tokens(messages, system=system, tools=tools)
    assert estimated.input_tokens > estimate_input_tokens(messages)
