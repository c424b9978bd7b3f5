"""`AsyncClient.map` and `Client.map`: many requests with bounded concurrency, results in input order, retryable
faults ridden out, a failed call reported without stopping the rest, and a budget that stops the run cleanly."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest
from keel_helpers import ask, fault

import keel
from keel import AsyncClient, Budget, BudgetExceeded
from keel.bulk import Result
from keel.emulator import AsyncEmulatorTransport, Clock, Emulator, EmulatorConfig, RateLimits, async_client, client
from keel.emulator.clients import BASE_URL
from keel.ratelimit import Limits, RateLimiter

MODEL = "claude-haiku-5-5"


def request(n: int, latency_ms: int = 0, words: int = 5) -> dict[str, Any]:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 100}
    params["messages"] = ask(f"Question {n} [[keel:words={words}]]")
    if latency_ms:
        params["extra_headers"] = fault(f"latency_ms={latency_ms}")
    return params


class InFlight:
    """The emulator's app, counting the requests it is serving at once."""

    def __init__(self, app: Emulator) -> None:
        self.app = app
        self.now = self.most = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


async def collect(keel_client: AsyncClient, requests: list[dict[str, Any]], **options: Any) -> list[Result[Any]]:
    return [result async for result in keel_client.map(requests, **options)]


async def test_results_come_in_input_order_while_the_calls_end_in_another(keel_emulator: Emulator) -> None:
    requests = [request(n, latency_ms=(8 - n) * 15) for n in range(8)]  # the first is the slowest
    async with AsyncClient(async_client(keel_emulator)) as claude:
        results = await collect(claude, requests, concurrency=8)
    assert [result.index for result in results] == list(range(8))
    assert [result.request for result in results] == requests
    assert all(result.reply is not None and result.error is None for result in results)
    served = [entry.request_id for entry in keel_emulator.access_log.entries()]
    replies = [result.reply.request_id for result in results if result.reply is not None]
    assert sorted(served) == sorted(replies) and served != replies  # answered out of order, returned in order


async def test_no_more_than_concurrency_calls_are_in_flight(keel_emulator: Emulator) -> None:
    app = InFlight(keel_emulator)
    http = httpx2.AsyncClient(transport=AsyncEmulatorTransport(app), base_url=BASE_URL)
    sdk = anthropic.AsyncAnthropic(api_key="keel-emulator-key", base_url=BASE_URL, http_client=http)
    async with AsyncClient(sdk) as claude:
        results = await collect(claude, [request(n, latency_ms=20) for n in range(12)], concurrency=3)
    assert len(results) == 12 and app.most == 3


async def test_retryable_faults_are_ridden_out_and_a_failed_call_does_not_stop_the_rest(
    keel_emulator: Emulator,
) -> None:
    keel_emulator.inject("status=529; retry_after_ms=5", limit=3)  # an overload storm of three 529s
    requests = [request(n) for n in range(6)]
    requests[2]["extra_headers"] = fault("status=400; message=messages.0: bad request")  # never retried
    budget = Budget(1)
    async with AsyncClient(async_client(keel_emulator)) as claude:
        results = await collect(claude, requests, concurrency=2, budget=budget)
    assert [result.reply is not None for result in results] == [True, True, False, True, True, True]
    failed = results[2].error
    assert failed is not None and failed.status == 400 and failed.request_id is not None
    assert not failed.error_class.retryable
    replies = [result.reply for result in results if result.reply is not None]
    assert budget.spent_usd == pytest.approx(sum(reply.cost_usd or 0 for reply in replies))  # the 400 cost nothing
    statuses = [entry.status for entry in keel_emulator.access_log.entries()]
    assert statuses.count(529) == 3 and statuses.count(200) == 5 and statuses.count(400) == 1


async def test_a_budget_stops_the_run_after_the_calls_in_flight_and_says_what_is_left(keel_emulator: Emulator) -> None:
    requests = [request(n, words=50) for n in range(10)]  # half of max_tokens each
    worst = Budget(1).worst_case_for(requests[0])
    budget = Budget(worst * 3)  # three worst cases: the real costs are lower, so more than three run
    seen: list[Result[Any]] = []
    async with AsyncClient(async_client(keel_emulator)) as claude:
        with pytest.raises(BudgetExceeded) as stopped:
            async for result in claude.map(requests, concurrency=2, budget=budget):
                seen.append(result)
    sent = len(keel_emulator.access_log.entries())
    assert 3 < len(seen) == sent < 10  # everything sent came back, in order, before the stop
    assert [result.index for result in seen] == list(range(sent))
    spent = sum(result.reply.cost_usd or 0 for result in seen if result.reply is not None)
    assert budget.spent_usd == pytest.approx(spent) and budget.reserved_usd == 0
    assert budget.spent_usd + float(worst) > budget.limit_usd  # the next request could have passed it
    error = stopped.value
    assert (error.limit_usd, error.next_usd) == (budget.limit_usd, float(worst))
    assert error.spent_usd == budget.spent_usd and error.left_usd == pytest.approx(budget.left_usd)
    assert isinstance(error, keel.KeelError) and "left" in str(error)


def test_the_sync_client_maps_the_same_way(keel_emulator: Emulator) -> None:
    requests = [request(n, latency_ms=(4 - n) * 20) for n in range(4)]
    with keel.Client(client(keel_emulator)) as claude:
        results = list(claude.map(requests, concurrency=4, budget=1.0))
        assert [result.index for result in results] == [0, 1, 2, 3]
        assert all(result.reply is not None and result.reply.record.policy == "background" for result in results)
        stopped = claude.map(requests, budget=0.0)
        with pytest.raises(BudgetExceeded):
            next(stopped)
    assert len(keel_emulator.access_log.entries()) == 4  # the second map sent nothing


async def test_concurrency_below_one_is_refused(keel_emulator: Emulator) -> None:
    async with AsyncClient(async_client(keel_emulator)) as claude:
        with pytest.raises(ValueError, match="concurrency"):
            await collect(claude, [request(0)], concurrency=0)


async def test_an_error_that_is_not_a_failed_call_stops_the_map_and_calls_cut_short_count_at_their_worst_case(
    keel_emulator: Emulator,
) -> None:
    slow, bad = request(0, latency_ms=2_000), {**request(1), "not_a_messages_parameter": True}
    budget = Budget(1)
    async with AsyncClient(async_client(keel_emulator)) as claude:
        with pytest.raises(TypeError, match="not_a_messages_parameter"):
            await collect(claude, [slow, bad, request(2)], concurrency=2, budget=budget)
    assert budget.reserved_usd == 0  # nothing left held; what may have been billed counted in full
    assert budget.spent_usd == float(budget.worst_case_for(slow) + budget.worst_case_for(bad))


async def test_a_client_with_a_rate_limiter_paces_the_calls_map_sends_and_meets_no_429() -> None:
    """The emulator's clock runs 60 times faster: its 20 requests a minute are 20 a second of real time. The map's
    concurrency bounds the calls in flight; the limiter, inside each call, holds back those over the limit."""
    emulator = Emulator(
        EmulatorConfig(clock=Clock(speed=60), rate_limits=RateLimits(requests_per_minute=20, enforce=True))
    )
    limiter = RateLimiter(Limits(requests=20, input_tokens=10**6, output_tokens=10**6, per=1.0), window=1.0)
    async with AsyncClient(async_client(emulator), limiter=limiter) as claude:
        results = await collect(claude, [request(n) for n in range(30)], concurrency=8, budget=1.0)
    assert [result.index for result in results] == list(range(30)) and all(result.reply for result in results)
    assert [entry.status for entry in emulator.access_log.entries()] == [200] * 30  # each sent once, none refused
