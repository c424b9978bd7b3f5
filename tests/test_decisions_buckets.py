"""The bucket arithmetic (keel.ratelimit.buckets), seen through a RateLimiter on a LocalBackend whose clock the
test sets: refill, all-or-nothing takes, the wait for a shortfall, pauses, settling, the server's `remaining` and
the rate factor, each at and either side of its threshold.

The limits are 60 requests, 6,000 input and 600 output tokens a minute: refilled at 1, 100 and 10 a second.
"""

from __future__ import annotations

import pytest
from ratelimit_helpers import Clock

from keel.ratelimit import (
    AcquireTimeout,
    Adaptation,
    Amounts,
    BucketOp,
    BucketSpec,
    Limits,
    LocalBackend,
    RateLimiter,
    Reservation,
)

MODEL = "claude-haiku-5-5"
LIMITS = Limits(requests=60, input_tokens=6_000, output_tokens=600)
FULL = (60, 6_000, 600)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limiter_at(clock: Clock, adaptation: Adaptation | None = None) -> RateLimiter:
    return RateLimiter(LIMITS, backend=LocalBackend(clock), adaptation=adaptation)


def refused_wait(limiter: RateLimiter, input_tokens: int, output_tokens: int) -> float:
    """The wait a refused take answers (`timeout=0`: one try)."""
    with pytest.raises(AcquireTimeout) as refused:
        limiter.acquire(Reservation(MODEL, input_tokens, output_tokens), timeout=0)
    return refused.value.wait


def levels(limiter: RateLimiter) -> tuple[float, ...]:
    return tuple(limiter.snapshot(MODEL).levels)


def test_a_new_bucket_set_is_full_unpaused_at_full_rate_and_grants_its_whole_capacity_at_once(clock: Clock) -> None:
    limiter = limiter_at(clock)
    view = limiter.snapshot(MODEL)
    assert (tuple(view.levels), view.factor, view.paused_for, view.granted, view.wait) == (FULL, 1.0, 0.0, False, 0.0)
    limiter.acquire(Reservation(MODEL, 6_000, 600), timeout=0)  # one request and every token: exactly what fits
    assert levels(limiter) == (59, 0, 0)


def test_buckets_refill_at_their_limit_per_window_and_never_above_capacity(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0)
    assert levels(limiter) == (59, 5_000, 500)
    clock.now = 4.0
    assert levels(limiter) == (59 + 1, 5_000 + 400, 500 + 40)  # full already: the requests bucket stops at 60
    clock.now = 100.0
    assert levels(limiter) == FULL


def test_a_take_that_does_not_fit_waits_for_its_largest_shortfall_and_debits_nothing(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 5_000, 500), timeout=0)
    assert levels(limiter) == (59, 1_000, 100)
    # input short by 500 (5 s at 100/s), output short by 100 (10 s at 10/s): the take waits for the output
    assert refused_wait(limiter, 1_500, 200) == 10.0
    assert levels(limiter) == (59, 1_000, 100)
    clock.now = 9.5
    assert refused_wait(limiter, 1_500, 200) == 0.5
    clock.now = 10.0  # exactly refilled: granted, and all three debited
    limiter.acquire(Reservation(MODEL, 1_500, 200), timeout=0)
    assert levels(limiter) == (60 - 1, 1_000 + 1_000 - 1_500, 100 + 100 - 200)  # requests: refilled to 60 at most


def test_a_take_one_token_over_a_level_is_refused_and_one_at_it_is_granted(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 5_900, 590), timeout=0)
    assert refused_wait(limiter, 101, 10) == pytest.approx(1 / 100)  # one input token short: 1/100 s
    assert refused_wait(limiter, 100, 11) == pytest.approx(1 / 10)  # one output token short: 1/10 s
    limiter.acquire(Reservation(MODEL, 100, 10), timeout=0)
    assert levels(limiter) == (58, 0, 0)


def test_a_halved_rate_factor_halves_the_refill_and_doubles_the_wait(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 6_000, 600), timeout=0)
    limiter.observe(MODEL, {}, 429)  # no retry-after: the rate is cut, nothing is paused
    assert limiter.snapshot(MODEL).factor == 0.5
    assert refused_wait(limiter, 100, 10) == 2.0  # 10 output tokens at 10/s × 0.5
    clock.now = 1.0
    assert levels(limiter) == (59.5, 50, 5)


def test_a_pause_holds_every_take_until_it_ends_and_not_a_moment_longer(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.observe(MODEL, {"retry-after": "2"}, 429)
    assert limiter.snapshot(MODEL).paused_for == 2.0
    clock.now = 1.5
    assert refused_wait(limiter, 1, 1) == 0.5  # everything fits, but the pause has 0.5 s left
    clock.now = 2.0
    limiter.acquire(Reservation(MODEL, 1, 1), timeout=0)
    clock.now = 10.0
    assert limiter.snapshot(MODEL).paused_for == 0.0  # an ended pause is not a negative one


def test_a_pause_of_under_a_second_is_kept_to_the_millisecond(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.observe(MODEL, {"retry-after-ms": "800"}, 429)
    assert limiter.snapshot(MODEL).paused_for == pytest.approx(0.8)
    assert refused_wait(limiter, 1, 1) == pytest.approx(0.8)


def test_a_shorter_pause_never_shortens_a_longer_one_in_force(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.observe(MODEL, {"retry-after": "5"}, 429)
    clock.now = 1.0
    limiter.observe(MODEL, {"retry-after": "1"}, 429)
    assert limiter.snapshot(MODEL).paused_for == 4.0
    limiter.observe(MODEL, {"retry-after": "6"}, 429)
    assert limiter.snapshot(MODEL).paused_for == 6.0


def test_reconcile_refunds_up_to_capacity_and_an_overshoot_is_a_debt_that_delays_the_next_take(clock: Clock) -> None:
    limiter = limiter_at(clock)
    permit = limiter.acquire(Reservation(MODEL, 1_000, 500), timeout=0)
    permit.reconcile(200, 600)  # 800 input tokens unused; 100 output tokens more than reserved
    assert levels(limiter) == (59, 5_800, 0)
    permit = limiter.acquire(Reservation(MODEL, 0, 0), timeout=0)
    permit.reconcile(0, 50)  # the output bucket now owes 50
    assert levels(limiter) == (58, 5_800, -50)
    assert refused_wait(limiter, 0, 10) == 6.0  # 60 output tokens to refill at 10/s
    clock.now = 100.0  # refilled to full, then a late refund: it cannot lift a bucket past its capacity
    late = limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0)
    clock.now = 200.0
    late.reconcile(0, 0)
    assert levels(limiter) == FULL


def test_a_bucket_the_server_limits_to_zero_still_grants_a_reservation_that_asks_nothing_of_it(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.observe(MODEL, {"anthropic-ratelimit-output-tokens-limit": "0"})
    assert levels(limiter) == (60, 6_000, 0)
    limiter.acquire(Reservation(MODEL, 10, 0), timeout=0)
    assert levels(limiter) == (59, 5_990, 0)


def test_release_refunds_the_tokens_but_not_the_request(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0).release()
    assert levels(limiter) == (59, 6_000, 600)


def test_the_servers_remaining_lowers_a_level_never_raises_it_and_zero_empties_it(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0)  # levels (59, 5000, 500)
    headers = {
        "anthropic-ratelimit-requests-remaining": "10",
        "anthropic-ratelimit-input-tokens-remaining": "5500",
        "anthropic-ratelimit-output-tokens-remaining": "0",
    }
    limiter.observe(MODEL, headers)
    assert levels(limiter) == (10, 5_000, 0)
    limiter.observe(MODEL, {"anthropic-ratelimit-requests-remaining": "3"})  # the buckets not reported stay
    assert levels(limiter) == (3, 5_000, 0)


def test_the_first_stated_limits_take_what_is_still_in_flight_off_the_servers_remaining(clock: Clock) -> None:
    limiter = limiter_at(clock)
    limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0)  # granted, not settled: in flight
    headers = {
        "anthropic-ratelimit-requests-limit": "60",
        "anthropic-ratelimit-requests-remaining": "50",
        "anthropic-ratelimit-input-tokens-remaining": "4000",
        "anthropic-ratelimit-output-tokens-remaining": "400",
    }
    limiter.observe(MODEL, headers)
    assert levels(limiter) == (50 - 1, 4_000 - 1_000, 400 - 100)
    limiter.observe(MODEL, headers)  # once only: later, remaining is read as it is
    assert levels(limiter) == (49, 3_000, 300)


def test_stated_limits_become_capacities_refilled_over_the_window(clock: Clock) -> None:
    limiter = limiter_at(clock)
    stated = {"anthropic-ratelimit-requests-limit": "120", "anthropic-ratelimit-output-tokens-limit": "1200"}
    limiter.observe(MODEL, stated)
    spec = limiter.limits_for(MODEL)
    assert tuple(spec.capacities) == (120, 6_000, 1_200)
    assert tuple(spec.rates) == (2.0, 100.0, 20.0)  # over a minute; the input limit not stated stays as configured
    short = RateLimiter(LIMITS, backend=LocalBackend(clock), window=30)
    short.observe(MODEL, {"anthropic-ratelimit-input-tokens-limit": "900"})
    assert tuple(short.limits_for(MODEL).rates) == (1.0, 30.0, 10.0)


def test_the_rate_factor_stays_between_the_floor_and_one(clock: Clock) -> None:
    limiter = limiter_at(clock, Adaptation(decrease=0.5, increase=0.25, floor=0.125))
    factors = []
    for status in (429, 429, 429, 429, 200, 200, 200, 200):
        limiter.observe(MODEL, {}, status)
        factors.append(limiter.snapshot(MODEL).factor)
    assert factors == [0.5, 0.25, 0.125, 0.125, 0.375, 0.625, 0.875, 1.0]


def test_an_observation_of_levels_alone_leaves_the_rate_factor_and_the_pause_as_they_are(clock: Clock) -> None:
    backend, spec = LocalBackend(clock), LIMITS.spec()
    unreported = Amounts(-1, -1, -1)
    backend.apply("set", BucketOp("observe", spec, unreported, factor_scale=0.5, factor_floor=0.05, pause=3.0))
    view = backend.apply("set", BucketOp("observe", spec, Amounts(-1, -1, 300)))  # the operation's defaults
    assert (view.factor, view.paused_for, tuple(view.levels)) == (0.5, 3.0, (60, 6_000, 300))
    untouched = backend.apply("another set", BucketOp("observe", spec, unreported))
    assert (untouched.factor, untouched.paused_for, tuple(untouched.levels)) == (1.0, 0.0, FULL)


def test_a_clock_that_steps_back_neither_refills_nor_drains_the_buckets(clock: Clock) -> None:
    limiter = limiter_at(clock)
    clock.now = 10.0
    limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0)
    limiter.observe(MODEL, {}, 200)  # a success pauses nothing, not even until now
    clock.now = 5.0  # another process's clock, or a clock adjusted backwards
    assert levels(limiter) == (59, 5_000, 500)
    limiter.acquire(Reservation(MODEL, 1_000, 100), timeout=0)
    assert levels(limiter) == (58, 4_000, 400)


def test_a_bucket_whose_stated_limit_is_zero_answers_an_endless_wait_not_an_error(clock: Clock) -> None:
    spec = BucketSpec(Amounts(10, 0, 100), Amounts(1, 0, 10))  # the server stated 0 input tokens a window
    backend = LocalBackend(clock)
    backend.apply("set", BucketOp("adjust", spec, Amounts(0, -5, 0)))  # an overshoot settled below zero
    view = backend.apply("set", BucketOp("take", spec, Amounts(1, 0, 1)))
    assert not view.granted and view.wait == float("inf")


def test_a_request_short_by_one_waits_one_second_at_sixty_a_minute(clock: Clock) -> None:
    limiter = limiter_at(clock)
    for _ in range(60):
        limiter.acquire(Reservation(MODEL, 1, 1), timeout=0)
    assert refused_wait(limiter, 1, 1) == pytest.approx(1.0)  # the request bucket refills at 1 a second
