"""keel.Client(limiter=...): every attempt paced by the rate limiter, every permit settled, failures classified."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from keel_helpers import SIDES, Side, ask, stream_on

from keel import AsyncClient, CallFailed, Client, RetryPolicy, StreamInterrupted
from keel.emulator import Clock, Emulator, EmulatorConfig, RateLimits, async_client, client
from keel.ratelimit import BucketOp, BucketView, Limits, LocalBackend, RateLimiter

MODEL = "claude-opus-5"
HELLO = ask("Hello [[keel:words=5]]")
QUICK = RetryPolicy("quick", max_retries=2, timeout=5.0, deadline=0.5)
NO_RETRIES = RetryPolicy("no-retries", max_retries=0, timeout=10.0)


def test_a_paced_burst_stays_within_the_limits_where_an_unpaced_one_meets_429s() -> None:
    async def burst(keel: AsyncClient, n: int) -> list[Any]:
        return await asyncio.gather(
            *(keel.messages.create(model=MODEL, max_tokens=20, messages=HELLO) for _ in range(n)),
            return_exceptions=True,
        )

    limits = RateLimits(requests_per_minute=20, enforce=True)
    unpaced_emulator = Emulator(EmulatorConfig(rate_limits=limits))  # 20 a minute: a burst of 30 must meet 429s
    unpaced = asyncio.run(burst(AsyncClient(async_client(unpaced_emulator), policy=NO_RETRIES), 30))
    assert sum(isinstance(result, CallFailed) and result.status == 429 for result in unpaced) >= 5

    # the emulator's clock runs 60 times faster: its 20 requests a minute are 20 a second of real time
    emulator = Emulator(EmulatorConfig(clock=Clock(speed=60), rate_limits=limits))
    # paced a tenth below the server's limit, as a fleet would be: the headroom absorbs requests that a loaded
    # machine holds back after their permit and then sends together
    limiter = RateLimiter(Limits(requests=18, input_tokens=10**6, output_tokens=10**6, per=1.0), window=1.0)
    paced = AsyncClient(async_client(emulator), limiter=limiter, policy=RetryPolicy("paced", max_retries=3, timeout=10))
    started = time.monotonic()
    results = asyncio.run(burst(paced, 40))
    assert all(not isinstance(result, BaseException) for result in results)
    statuses = [entry.status for entry in emulator.access_log.entries()]
    assert statuses.count(200) == 40 and statuses.count(429) <= 2  # at most a clock-skew miss, never a storm
    assert time.monotonic() - started >= 1.0  # 40 requests at 18 a second, from a full bucket of 18


class LoopWatchingBackend(LocalBackend):
    """The in-process backend, noting each blocking operation made on a running event loop's thread: with a
    networked backend (Redis) that would stall every other task of the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking_on_loop: list[str] = []
        self._in_async = False  # the in-process apply_async runs apply: that one is not a blocking call

    def apply(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView:
        if not self._in_async:
            try:
                asyncio.get_running_loop()
                self.blocking_on_loop.append(op.kind)
            except RuntimeError:
                pass
        return super().apply(key, op, deadline)

    async def apply_async(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView:
        self._in_async = True
        try:
            return await super().apply_async(key, op, deadline)
        finally:
            self._in_async = False


def tight_output(side: Side) -> tuple[Emulator, Client | AsyncClient]:
    """A client whose output bucket holds 100,000 tokens a minute, as the emulator says too: a call reserving
    60,000 (its max_tokens) fits twice only when the first call's permit was settled to its real usage."""
    emulator = Emulator(EmulatorConfig(rate_limits=RateLimits(output_tokens_per_minute=100_000)))
    limits = Limits(requests=1_000, input_tokens=10**6, output_tokens=100_000)
    limiter = RateLimiter(limits, backend=LoopWatchingBackend())
    if side == "sync":
        return emulator, Client(client(emulator), limiter=limiter, policy=QUICK)
    return emulator, AsyncClient(async_client(emulator), limiter=limiter, policy=QUICK)


def create(keel: Client | AsyncClient, **params: Any) -> Any:
    if isinstance(keel, AsyncClient):
        return asyncio.run(keel.messages.create(**params))
    return keel.messages.create(**params)


BIG = {"model": MODEL, "max_tokens": 60_000, "messages": HELLO}


def overloaded_twice(emulator: Emulator, keel: Client | AsyncClient, side: Side) -> None:
    emulator.inject("status=529; retry_after_ms=1", limit=2)
    assert create(keel, **BIG).record.attempts == 3


def broken_stream(emulator: Emulator, keel: Client | AsyncClient, side: Side) -> None:
    got = stream_on(side, emulator, options={"limiter": keel.settings.limiter, "policy": QUICK}, **BIG,
                    extra_headers={"x-keel-fault": "stream_error_after=6"})  # fmt: skip
    assert isinstance(got.error, StreamInterrupted)


def dropped_stream(emulator: Emulator, keel: Client | AsyncClient, side: Side) -> None:
    got = stream_on(side, emulator, options={"limiter": keel.settings.limiter, "policy": QUICK}, **BIG,
                    extra_headers={"x-keel-fault": "drop_after=6"})  # fmt: skip
    assert isinstance(got.error, StreamInterrupted)


def abandoned_stream(emulator: Emulator, keel: Client | AsyncClient, side: Side) -> None:
    got = stream_on(side, emulator, options={"limiter": keel.settings.limiter, "policy": QUICK}, stop_after=2, **BIG)
    assert got.final is None


def plain(emulator: Emulator, keel: Client | AsyncClient, side: Side) -> None:
    assert create(keel, **BIG).outcome.kind == "end_turn"


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "first", [plain, overloaded_twice, broken_stream, dropped_stream, abandoned_stream], ids=lambda f: f.__name__
)
def test_every_permit_is_settled_so_the_next_call_fits(
    side: Side, first: Callable[[Emulator, Client | AsyncClient, Side], None]
) -> None:
    emulator, keel = tight_output(side)
    first(emulator, keel, side)
    second = create(keel, **BIG)  # would wait past the 0.5 s deadline if 60,000 output tokens were still held
    assert second.outcome.kind == "end_turn"
    backend = keel.settings.limiter.backend if keel.settings.limiter is not None else None
    assert isinstance(backend, LoopWatchingBackend) and backend.blocking_on_loop == []  # asyncio: never blocked


@pytest.mark.parametrize("side", SIDES)
def test_a_call_that_gets_no_permit_by_its_deadline_fails_fast_and_sends_nothing(side: Side) -> None:
    emulator, keel = tight_output(side)
    limiter = keel.settings.limiter
    assert limiter is not None
    held = limiter.acquire(limiter_reservation(70_000))  # someone else holds most of the output bucket
    started = time.monotonic()
    with pytest.raises(CallFailed) as caught:
        create(keel, **BIG)
    assert caught.value.error_class.name == "pacing_timeout" and caught.value.error_class.retryable
    assert caught.value.record.attempts == 0 and emulator.access_log.entries() == []
    assert 0.4 <= time.monotonic() - started < 2.0
    held.release()


@pytest.mark.parametrize("side", SIDES)
def test_a_request_larger_than_a_whole_bucket_fails_at_once(side: Side) -> None:
    emulator, keel = tight_output(side)
    started = time.monotonic()
    with pytest.raises(CallFailed) as caught:
        create(keel, model=MODEL, max_tokens=120_000, messages=HELLO)
    assert caught.value.error_class.name == "over_rate_limit" and not caught.value.error_class.retryable
    assert "output tokens" in str(caught.value.sdk_error) and emulator.access_log.entries() == []
    assert time.monotonic() - started < 0.5


def limiter_reservation(output_tokens: int) -> Any:
    from keel.ratelimit import Reservation

    return Reservation(MODEL, 10, output_tokens)


def test_count_tokens_and_other_endpoints_are_not_paced() -> None:
    emulator = Emulator()
    limiter = RateLimiter(Limits(requests=1, input_tokens=10**6, output_tokens=10**6))
    keel = Client(client(emulator), limiter=limiter, policy=QUICK)
    held = limiter.acquire(limiter_reservation(10))  # the only request of the minute
    assert keel.messages.count_tokens(model=MODEL, messages=HELLO) > 0  # not a Messages request: not paced
    with pytest.raises(CallFailed, match="pacing_timeout"):
        keel.messages.create(model=MODEL, max_tokens=20, messages=HELLO)
    held.release()
