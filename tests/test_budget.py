"""keel.Budget: the arithmetic of a spending ceiling (reserve the worst case, settle to the real cost) and the
pre-flight estimate, exact to the decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keel
from keel import Budget, UnpricedModel, Usage, estimate_cost
from keel.emulator import Emulator, client

HAIKU = "claude-haiku-5-5"  # $0.10 input, $0.50 output, $0.20 1-hour cache write per million tokens; 5x over 100k
MILLION = Decimal(1_000_000)


def test_worst_case_is_the_input_plus_all_of_max_tokens_at_the_models_prices() -> None:
    budget = Budget(1)
    assert budget.worst_case(HAIKU, 1_000, 2_000) == (1_000 * Decimal("0.1") + 2_000 * Decimal("0.5")) / MILLION
    assert Budget(1, batch=True).worst_case(HAIKU, 1_000, 2_000) == budget.worst_case(HAIKU, 1_000, 2_000) / 2
    caching = budget.worst_case(HAIKU, 1_000, 2_000, caching=True)  # input at its dearest: a 1-hour cache write
    assert caching == (1_000 * Decimal("0.2") + 2_000 * Decimal("0.5")) / MILLION
    long_prompt = budget.worst_case(HAIKU, 200_000, 2_000)  # over 100,000 prompt tokens every price is 5x
    assert long_prompt == 5 * (200_000 * Decimal("0.1") + 2_000 * Decimal("0.5")) / MILLION


def test_a_reservation_that_could_pass_the_ceiling_is_refused_and_reserves_nothing() -> None:
    worst = Budget(1).worst_case(HAIKU, 1_000, 2_000)
    budget = Budget(worst * 2)  # room for exactly two worst cases: the ceiling itself can be reached
    first, second = budget.reserve(HAIKU, 1_000, 2_000), budget.reserve(HAIKU, 1_000, 2_000)
    assert first is not None and second is not None and first.usd == worst
    assert budget.left_usd == 0 and budget.reserved_usd == float(worst * 2)
    assert budget.reserve(HAIKU, 1, 1) is None  # a single token more would pass it
    assert budget.reserved_usd == float(worst * 2) and budget.spent_usd == 0


def test_settling_releases_the_worst_case_and_adds_the_real_cost() -> None:
    budget = Budget("0.01", spent_usd="0.002")  # an earlier run of the job spent $0.002
    hold = budget.reserve(HAIKU, 1_000, 2_000)
    assert hold is not None
    cost = budget.settle(hold, {"input_tokens": 900, "output_tokens": 150})
    assert cost == (900 * Decimal("0.1") + 150 * Decimal("0.5")) / MILLION
    assert budget.reserved_usd == 0 and hold.settled
    assert budget.spent_usd == float(Decimal("0.002") + cost)
    assert budget.left_usd == float(Decimal("0.01") - Decimal("0.002") - cost)
    with pytest.raises(ValueError, match="already settled"):
        budget.settle(hold, {"input_tokens": 1, "output_tokens": 1})
    assert budget.spent_usd == float(Decimal("0.002") + cost)


def test_a_known_cost_settles_a_hold_without_a_model_and_work_already_sent_is_counted_past_the_ceiling() -> None:
    budget = Budget("0.5", batch=True)
    shard = budget.reserve_usd(Decimal("0.75"), force=True)  # submitted by an earlier run: counted, not refused
    assert shard is not None and budget.left_usd == -0.25
    assert budget.reserve_usd(Decimal("0.01")) is None
    with pytest.raises(ValueError, match="settle_usd"):
        budget.settle(shard, Usage(output_tokens=1))
    budget.settle_usd(shard, Decimal("0.125"))
    assert (budget.spent_usd, budget.reserved_usd, budget.left_usd) == (0.125, 0, 0.375)


def test_a_model_without_a_price_cannot_be_budgeted_but_is_named_in_the_estimate() -> None:
    budget = Budget(100)
    with pytest.raises(UnpricedModel, match="claude-unknown-1") as raised:
        budget.reserve("claude-unknown-1", 10, 10)
    assert raised.value.model == "claude-unknown-1" and isinstance(raised.value, keel.KeelError)
    assert budget.reserved_usd == 0
    estimate = estimate_cost([{"model": "claude-unknown-1", "max_tokens": 5, "messages": []}])
    assert estimate.unpriced_models == ("claude-unknown-1",) and estimate.high_usd == 0
    assert "no price for claude-unknown-1" in estimate.describe()


def test_a_budget_is_a_number_of_dollars_at_least_zero() -> None:
    for bad in (-1, "nan", float("inf")):
        with pytest.raises(ValueError, match="USD >= 0"):
            Budget(bad)


def test_the_estimate_is_input_only_low_and_input_plus_max_tokens_high() -> None:
    requests = [
        {"model": HAIKU, "max_tokens": 100, "messages": [{"role": "user", "content": "Summarise report 1"}]},
        '{"max_tokens":300,"messages":[{"content":"Summarise report 2","role":"user"}],"model":"claude-opus-5"}',
    ]
    budget = Budget(1)
    estimate = estimate_cost(requests)
    assert estimate.requests == 2 and estimate.max_output_tokens == 400 and not estimate.batch
    assert estimate.high_usd == float(sum(budget.worst_case_for(r) for r in requests))
    opus = Budget(1).worst_case("claude-opus-5", 0, 300)
    haiku = Budget(1).worst_case(HAIKU, 0, 100)
    assert estimate.high_usd - estimate.low_usd == pytest.approx(float(opus + haiku))
    assert estimate_cost(requests, batch=True).high_usd == pytest.approx(estimate.high_usd / 2)
    assert "2 requests" in estimate.describe() and "standard prices" in estimate.describe()


PROMPTS = [
    "Summarise the quarterly report in three bullet points.",
    "Traduis en français : « le budget est épuisé », s'il te plaît.",
    "日本語で短い詩を書いてください。",
    "def f(x):\n    return {'a': [x, x * 2]}  # explain this code",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_hold_covers_what_the_emulator_bills_for_the_request(prompt: str) -> None:
    tools = [{"name": "lookup", "description": "Find a record", "input_schema": {"type": "object"}}]
    params = {"model": HAIKU, "max_tokens": 60, "system": "Be brief.", "tools": tools, "tool_choice": {"type": "none"}}
    params["messages"] = [{"role": "user", "content": prompt}]
    budget = Budget(1)
    hold = budget.reserve_for(params)
    assert hold is not None
    message = client(Emulator()).messages.create(**params)  # type: ignore[call-overload]
    assert budget.settle(hold, message.usage) <= hold.usd
    assert budget.spent_usd <= float(hold.usd)


@given(
    limit=st.decimals(min_value=0, max_value="0.01", places=6),
    requests=st.lists(
        st.tuples(
            st.integers(0, 50_000),  # input tokens reserved
            st.integers(1, 20_000),  # max_tokens
            st.floats(0, 1),  # share of the input billed
            st.floats(0, 1),  # share of max_tokens generated
            st.booleans(),  # settle it now, or leave it in flight
        ),
        max_size=30,
    ),
)
def test_spent_plus_reserved_never_passes_the_ceiling_while_usage_stays_within_the_worst_case(
    limit: Decimal, requests: list[tuple[int, int, float, float, bool]]
) -> None:
    budget = Budget(limit)
    in_flight = []
    for input_tokens, max_tokens, billed_in, billed_out, settle_now in requests:
        hold = budget.reserve(HAIKU, input_tokens, max_tokens)
        if hold is not None:
            in_flight.append((hold, Usage(int(input_tokens * billed_in), int(max_tokens * billed_out))))
        if settle_now and in_flight:
            budget.settle(*in_flight.pop(0))
        assert budget.left_usd >= 0  # limit - spent - reserved, exact until this conversion to float
    for hold, usage in in_flight:
        budget.settle(hold, usage)
    assert budget.reserved_usd == 0 and budget.spent_usd <= float(limit)
