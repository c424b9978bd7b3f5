"""The limiter's behaviour, one suite run on both backends: in-process and the machine's Redis.

Limits are given per second or less (`Limits(per=...)`), so refills happen within the test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from ratelimit_helpers import MODEL, redis_backend

from keel.ratelimit import (
    AcquireTimeout,
    Adaptation,
    Backend,
    LimitExceedsCapacity,
    Limits,
    LocalBackend,
    RateLimiter,
    Reservation,
)


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "local":
        yield LocalBackend()
    else:
        with redis_backend() as shared:
            yield shared


@pytest.fixture
async def async_backend(backend: Backend) -> AsyncIterator[Backend]:
    """The backend, its asyncio side closed in the test's own event loop."""
    yield backend
    await backend.aclose()


def limiter_on(backend: Backend, limits: Limits, **options: Any) -> RateLimiter:
    return RateLimiter(limits, backend=backend, **options)


def test_a_reservation_takes_all_three_buckets_or_none(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=3600))
    limiter.acquire(Reservation(MODEL, 600, 100))
    before = limiter.snapshot(MODEL).levels
    assert before == pytest.approx((9, 400, 900), abs=0.5)

    with pytest.raises(AcquireTimeout):  # input fits, requests fit, output (950 > 900) does not
        limiter.acquire(Reservation(MODEL, 10, 950), timeout=0)
    assert limiter.snapshot(MODEL).levels == pytest.approx(before, abs=0.5)  # nothing was taken from any bucket

    with pytest.raises(AcquireTimeout):  # the input bucket is the short one this time
        limiter.acquire(Reservation(MODEL, 500, 10), timeout=0)
    assert limiter.snapshot(MODEL).levels == pytest.approx(before, abs=0.5)


def test_buckets_refill_continuously(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=2, input_tokens=100, output_tokens=100, per=0.4))  # 5 requests/s
    started = time.monotonic()
    for _ in range(2):
        limiter.acquire(Reservation(MODEL, 1, 1), timeout=0)
    with pytest.raises(AcquireTimeout) as caught:
        limiter.acquire(Reservation(MODEL, 1, 1), timeout=0)
    assert 0.1 < caught.value.wait <= 0.2

    limiter.acquire(Reservation(MODEL, 1, 1), timeout=2)
    assert 0.2 <= time.monotonic() - started <= 1.5  # a third request refills 0.2 s after the first two


def test_reconcile_refunds_the_unused_reservation_and_debits_an_overshoot(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=3600))
    permit = limiter.acquire(Reservation(MODEL, 500, 400))
    assert limiter.snapshot(MODEL).levels == pytest.approx((9, 500, 600), abs=0.5)
    permit.reconcile(120, 30)
    assert limiter.snapshot(MODEL).levels == pytest.approx((9, 880, 970), abs=0.5)

    overshoot = limiter.acquire(Reservation(MODEL, 100, 100))
    limiter.reconcile(overshoot, 300, 100)  # the estimate was 200 tokens short
    assert limiter.snapshot(MODEL).levels == pytest.approx((8, 580, 870), abs=0.5)
    assert permit.settled and overshoot.settled


def test_release_refunds_the_tokens_not_the_request(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=3600))
    permit = limiter.acquire(Reservation(MODEL, 500, 400))
    permit.release()
    assert limiter.snapshot(MODEL).levels == pytest.approx((9, 1_000, 1_000), abs=0.5)
    with pytest.raises(RuntimeError, match="already settled"):
        permit.reconcile(1, 1)


def test_a_reservation_larger_than_a_bucket_fails_at_once(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=10, input_tokens=1_000, output_tokens=500))
    started = time.monotonic()
    with pytest.raises(LimitExceedsCapacity, match="1,001 input tokens exceeds") as caught:
        limiter.acquire(Reservation(MODEL, 1_001, 10))  # no timeout: it would otherwise wait forever
    assert (caught.value.bucket, caught.value.capacity) == ("input_tokens", 1_000)
    with pytest.raises(ValueError, match="output tokens"):
        limiter.acquire(Reservation(MODEL, 10, 501))
    assert time.monotonic() - started < 1  # at once, not after some wait
    assert limiter.snapshot(MODEL).levels == pytest.approx((10, 1_000, 500), abs=0.5)


def test_acquire_gives_up_at_its_deadline(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=1, input_tokens=100, output_tokens=100, per=10))
    limiter.acquire(Reservation(MODEL, 1, 1))
    started = time.monotonic()
    with pytest.raises(AcquireTimeout) as caught:
        limiter.acquire(Reservation(MODEL, 1, 1), timeout=0.2)
    assert 0.2 <= time.monotonic() - started <= 1.5
    assert isinstance(caught.value, TimeoutError) and 9 < caught.value.wait <= 10


def test_headers_set_capacities_and_lower_levels(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=50, input_tokens=1_000, output_tokens=1_000))
    limiter.acquire(Reservation(MODEL, 100, 100))
    headers = {
        "Anthropic-Ratelimit-Requests-Limit": "600",  # 10 a second
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-input-tokens-limit": "6000",
        "anthropic-ratelimit-input-tokens-remaining": "5000",  # more than we have left: not raised
        "anthropic-ratelimit-output-tokens-limit": "6000",
        "anthropic-ratelimit-output-tokens-remaining": "0",
    }
    limiter.observe(MODEL, headers, 200)
    spec = limiter.limits_for(MODEL)
    assert spec.capacities == (600, 6_000, 6_000)
    assert spec.rates == pytest.approx((10, 100, 100))
    assert limiter.snapshot(MODEL).levels == pytest.approx((3, 900, 0), abs=2)

    limiter.acquire(Reservation(MODEL, 10, 0), timeout=0)  # no output reserved: fits
    with pytest.raises(AcquireTimeout) as caught:  # 10 output tokens at 100 a second
        limiter.acquire(Reservation(MODEL, 10, 10), timeout=0)
    assert 0 < caught.value.wait <= 0.1
    assert limiter.limits_for("claude-haiku-5-5").capacities == (50, 1_000, 1_000)  # another model class


def test_the_first_limits_stated_count_the_requests_still_in_flight(backend: Backend) -> None:
    """Configured far above the real limits, the limiter lets a burst go before any response; the first response's
    `remaining` predates the rest of that burst, so what is still in flight is taken off it (once)."""
    limiter = limiter_on(backend, Limits(requests=1_000, input_tokens=10**6, output_tokens=10**6, per=3600))
    permits = [limiter.acquire(Reservation(MODEL, 100, 50)) for _ in range(10)]
    permits[0].reconcile(80, 20)
    headers = {
        "anthropic-ratelimit-requests-limit": "300",  # per minute, as the window says (60 s)
        "anthropic-ratelimit-requests-remaining": "299",  # counted when the first request arrived
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "29000",
        "anthropic-ratelimit-output-tokens-limit": "6000",
        "anthropic-ratelimit-output-tokens-remaining": "5000",
    }
    observed = time.monotonic()
    limiter.observe(MODEL, headers, 200)
    levels = limiter.snapshot(MODEL).levels
    refilled = (time.monotonic() - observed) / 60 * 1.05  # what a busy machine's delay may have refilled, per unit
    expected = (290, 28_100, 4_550)  # less the 9 in flight
    for level, start, per_minute in zip(levels, expected, (300, 30_000, 6_000), strict=True):
        assert start - 1 <= level <= start + 1 + per_minute * refilled
    for permit in permits[1:]:
        permit.reconcile(80, 20)
    limiter.observe(MODEL, {**headers, "anthropic-ratelimit-requests-remaining": "289"}, 200)
    assert limiter.snapshot(MODEL).levels[0] == pytest.approx(289, abs=1)  # afterwards, remaining as it is


def test_a_429_pauses_for_retry_after_and_halves_the_rate_until_successes_restore_it(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=1))
    observed = time.monotonic()
    limiter.observe(MODEL, {"retry-after": "0.3", "anthropic-ratelimit-requests-remaining": "0"}, 429)
    state = limiter.snapshot(MODEL)
    assert state.factor == 0.5 and 0.1 < state.paused_for <= 0.3
    with pytest.raises(AcquireTimeout) as caught:
        limiter.acquire(Reservation(MODEL, 1, 1), timeout=0)
    assert 0 < caught.value.wait <= 0.3

    limiter.acquire(Reservation(MODEL, 1, 1), timeout=2)
    assert 0.3 <= time.monotonic() - observed <= 1.5  # the pause (a request had refilled meanwhile, at half rate)

    before = limiter.snapshot(MODEL).levels.requests
    with pytest.raises(AcquireTimeout) as caught:  # requests refill at 10 x 0.5 a second
        limiter.acquire(Reservation(MODEL, 1, 1), timeout=0)
    after = limiter.snapshot(MODEL).levels.requests
    assert before < 1 and (1 - after) / 5 <= caught.value.wait <= (1 - before) / 5

    limiter.observe(MODEL, {}, 200)
    assert limiter.snapshot(MODEL).factor == pytest.approx(0.55)
    for _ in range(9):
        limiter.observe(MODEL, {}, 200)
    assert limiter.snapshot(MODEL).factor == 1.0


def test_overload_cuts_the_rate_down_to_the_floor_without_a_pause(backend: Backend) -> None:
    limiter = limiter_on(
        backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=1), adaptation=Adaptation(floor=0.2)
    )
    for expected in (0.5, 0.25, 0.2, 0.2):
        limiter.observe(MODEL, {}, 529)
        state = limiter.snapshot(MODEL)
        assert (state.factor, state.paused_for) == (pytest.approx(expected), 0)
    limiter.observe(MODEL, {}, 500)  # neither throttling nor success: no change
    assert limiter.snapshot(MODEL).factor == pytest.approx(0.2)


def test_model_classes_have_their_own_buckets_and_limits(backend: Backend) -> None:
    small = Limits(requests=1, input_tokens=100, output_tokens=100, per=60)
    limiter = limiter_on(backend, small, per_class={"haiku": Limits(requests=2, input_tokens=100, output_tokens=100)})
    limiter.acquire(Reservation("claude-opus-4-5-20251101", 1, 1), timeout=0)
    with pytest.raises(AcquireTimeout):
        limiter.acquire(Reservation("claude-opus-5", 1, 1), timeout=0)  # same class: opus
    for _ in range(2):
        limiter.acquire(Reservation("claude-haiku-5-5", 1, 1), timeout=0)


def test_the_context_manager_releases_when_the_request_fails(backend: Backend) -> None:
    limiter = limiter_on(backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=3600))
    with pytest.raises(ConnectionError), limiter.reserve(Reservation(MODEL, 300, 300)) as permit:
        raise ConnectionError("the request failed")
    assert permit.settled
    assert limiter.snapshot(MODEL).levels == pytest.approx((9, 1_000, 1_000), abs=0.5)

    with limiter.reserve(Reservation(MODEL, 300, 300)) as permit:
        permit.reconcile(100, 50)
    assert limiter.snapshot(MODEL).levels == pytest.approx((8, 900, 950), abs=0.5)


def test_threads_share_one_budget(backend: Backend) -> None:
    limits = Limits(requests=10, input_tokens=10_000, output_tokens=10_000, per=1)
    limiter = limiter_on(backend, limits, poll_interval=0.05)
    granted: list[float] = []
    end = time.monotonic() + 0.4

    def worker() -> None:
        while (left := end - time.monotonic()) > 0:
            try:
                limiter.acquire(Reservation(MODEL, 10, 10), timeout=left)
            except AcquireTimeout:
                return
            granted.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    in_window = sum(1 for stamp in granted if stamp <= end)
    assert 5 <= in_window <= 10 + 10 * 0.4  # at most the burst, then the refill


async def test_async_acquire_waits_without_blocking_the_loop(async_backend: Backend) -> None:
    limiter = limiter_on(async_backend, Limits(requests=1, input_tokens=100, output_tokens=100, per=0.3))
    await limiter.acquire_async(Reservation(MODEL, 1, 1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    permit = await limiter.acquire_async(Reservation(MODEL, 1, 1), timeout=2)
    waited = time.monotonic() - started
    task.cancel()
    assert 0.2 <= waited <= 1.5 and ticks >= 5
    await permit.reconcile_async(0, 1)
    assert (await limiter.snapshot_async(MODEL)).levels.input_tokens == pytest.approx(100, abs=1)


async def test_async_context_manager_releases_and_observe_pauses(async_backend: Backend) -> None:
    limiter = limiter_on(async_backend, Limits(requests=10, input_tokens=1_000, output_tokens=1_000, per=3600))
    with pytest.raises(ConnectionError):
        async with limiter.reserve_async(Reservation(MODEL, 300, 300)):
            raise ConnectionError("the request failed")
    assert (await limiter.snapshot_async(MODEL)).levels == pytest.approx((9, 1_000, 1_000), abs=0.5)

    observed = time.monotonic()
    await limiter.observe_async(MODEL, {"retry-after-ms": "150"}, 429)
    permit = await limiter.acquire_async(Reservation(MODEL, 1, 1), timeout=2)
    assert 0.15 <= time.monotonic() - observed <= 1.5
    await permit.release_async()
    await limiter.acquire_async(Reservation(MODEL, 1, 1_000), timeout=0)
    with pytest.raises(AcquireTimeout):  # one output token refills in 0.6 s
        await limiter.acquire_async(Reservation(MODEL, 1, 1), timeout=0.05)
