"""The limiter around real SDK calls, against the emulator's enforced rate limits and their real headers."""

from __future__ import annotations

import anthropic
import pytest

from keel.emulator import Emulator, EmulatorConfig, RateLimits, client
from keel.ratelimit import AcquireTimeout, Limits, RateLimiter, Reservation

MODEL = "claude-opus-5"
HELLO = [{"role": "user", "content": "Hello [[keel:words=5]]"}]
GENEROUS = Limits(requests=1_000, input_tokens=1_000_000, output_tokens=1_000_000)


def call(limiter: RateLimiter, sdk: anthropic.Anthropic, max_tokens: int = 50) -> anthropic.types.Message:
    """The pattern of docs/ratelimit.md: reserve, call, reconcile, observe; observe the error on failure."""
    reservation = Reservation.for_request(MODEL, HELLO, max_tokens=max_tokens)
    try:
        with limiter.reserve(reservation, timeout=0) as permit:
            raw = sdk.messages.with_raw_response.create(model=MODEL, max_tokens=max_tokens, messages=HELLO)
            message = raw.parse()
            usage = message.usage
            permit.reconcile(usage.input_tokens + (usage.cache_creation_input_tokens or 0), usage.output_tokens)
            limiter.observe(MODEL, raw.headers, raw.status_code)
            return message
    except anthropic.APIStatusError as err:
        limiter.observe(MODEL, err.response.headers, err.status_code)
        raise


def test_the_first_response_teaches_the_limiter_the_servers_limits_and_it_stops_before_a_429() -> None:
    emulator = Emulator(EmulatorConfig(rate_limits=RateLimits(requests_per_minute=3, enforce=True)))
    sdk = client(emulator, max_retries=0)
    limiter = RateLimiter(GENEROUS)  # configured far above the real limit
    for _ in range(3):
        call(limiter, sdk)
    assert limiter.limits_for(MODEL).capacities.requests == 3
    with pytest.raises(AcquireTimeout):  # held back here, instead of sent into a 429
        call(limiter, sdk)
    assert len(emulator.access_log.entries()) == 3


def test_a_429_pauses_the_limiter_for_retry_after_and_halves_its_rate() -> None:
    emulator = Emulator(EmulatorConfig(rate_limits=RateLimits(requests_per_minute=2, enforce=True)))
    sdk = client(emulator, max_retries=0)
    for _ in range(2):  # another program of the organization spends the budget
        sdk.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    limiter = RateLimiter(GENEROUS)
    with pytest.raises(anthropic.RateLimitError):
        call(limiter, sdk)
    state = limiter.snapshot(MODEL)
    assert state.factor == 0.5 and 1 <= state.paused_for <= 30  # a request refills in 30 s at 2 a minute
    assert state.levels.requests == pytest.approx(0, abs=0.01)
    with pytest.raises(AcquireTimeout) as caught:
        limiter.acquire(Reservation(MODEL, 10, 10), timeout=0)
    assert caught.value.wait == pytest.approx(state.paused_for, abs=0.5)
    assert len(emulator.access_log.entries()) == 3
