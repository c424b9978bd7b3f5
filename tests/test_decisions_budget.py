"""The budget check (keel.Budget, keel.estimate_cost), at and either side of its ceiling, with the figures of
docs/bulk.md ("Budgets"): claude-haiku-5-5 at $0.10 input, $0.50 output and $0.20 a 1-hour cache write per
million tokens, half in a batch; the input estimated at one token per 3 ASCII characters (a partial token
counted whole) and one per other character, over the request's JSON as it is sent (compact, its text as
written)."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from anthropic.types import TextBlock

from keel import Budget, BudgetExceeded, CostEstimate, UnpricedModel, Usage, estimate_cost, load_prices

HAIKU = "claude-haiku-5-5"
MILLION = Decimal(1_000_000)
INPUT, OUTPUT, CACHE_WRITE_1H = Decimal("0.1") / MILLION, Decimal("0.5") / MILLION, Decimal("0.2") / MILLION


def compact(params: dict[str, Any]) -> str:
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False)


def estimated(params: dict[str, Any] | str) -> int:
    return estimate_cost([params]).input_tokens


def test_the_documented_worst_case_is_input_plus_max_tokens_and_half_of_it_in_a_batch() -> None:
    assert Budget(1).worst_case(HAIKU, 1_200, 500) == Decimal("0.00037")
    assert Budget(1, batch=True).worst_case(HAIKU, 1_200, 500) == Decimal("0.000185")
    assert Budget(1).worst_case(HAIKU, 1_200, 500, caching=True) == 1_200 * CACHE_WRITE_1H + 500 * OUTPUT


def test_a_reservation_that_may_write_the_cache_holds_its_input_at_the_1_hour_cache_write_price() -> None:
    hold = Budget(1).reserve(HAIKU, 1_200, 500, caching=True)
    assert hold is not None and hold.usd == 1_200 * CACHE_WRITE_1H + 500 * OUTPUT


def test_a_new_budget_prices_at_standard_rates_with_nothing_spent_or_reserved() -> None:
    budget = Budget("2.5")
    assert (budget.batch, budget.limit_usd, budget.spent_usd, budget.reserved_usd, budget.left_usd) == (
        False,
        2.5,
        0.0,
        0.0,
        2.5,
    )
    assert Budget(1, batch=True).batch


def test_the_estimate_counts_three_ascii_characters_a_token_over_the_whole_request_rounding_up() -> None:
    line = '{"model":"claude-haiku-5-5","max_tokens":1}'  # 43 ASCII characters: 14 tokens and a third
    assert len(line) == 43 and estimated(line) == 15
    line = '{"model":"claude-haiku-5-5","max_tokens":12}'
    assert len(line) == 44 and estimated(line) == 15
    line = '{"model":"claude-haiku-5-5","max_tokens":123}'
    assert len(line) == 45 and estimated(line) == 15


def test_the_estimate_counts_every_other_character_as_a_token() -> None:
    params = {"model": HAIKU, "max_tokens": 1, "system": "日本語"}
    text = compact(params)
    assert estimated(params) == math.ceil((len(text) - 3) / 3) + 3
    assert estimated(text) == estimated(params)  # the params or their JSON: the same estimate


def test_an_sdk_object_in_the_messages_counts_by_its_text() -> None:
    block = TextBlock(type="text", text="An earlier answer.", citations=None)
    params = {"model": HAIKU, "max_tokens": 1, "messages": [{"role": "assistant", "content": [block]}]}
    as_text = {**params, "messages": [{"role": "assistant", "content": [str(block)]}]}
    assert estimated(params) == estimated(as_text)


def test_reserving_a_request_reserves_its_models_worst_case_of_its_estimate_and_max_tokens() -> None:
    params = {"model": HAIKU, "max_tokens": 700, "messages": [{"role": "user", "content": "Hello there."}]}
    budget = Budget(1)
    hold = budget.reserve_for(params)
    assert hold is not None and hold.model == HAIKU and not hold.settled
    assert hold.usd == estimated(params) * INPUT + 700 * OUTPUT
    assert budget.worst_case_for(compact(params)) == hold.usd
    assert budget.reserved_usd == float(hold.usd)


def test_a_request_without_max_tokens_is_reserved_for_its_input_alone() -> None:
    params = {"model": HAIKU, "messages": [{"role": "user", "content": "Hello there."}]}
    assert Budget(1).worst_case_for(params) == estimated(params) * INPUT


def test_a_request_with_cache_control_anywhere_is_reserved_as_1_hour_cache_writes() -> None:
    content = [{"type": "text", "text": "A long shared prefix.", "cache_control": {"type": "ephemeral"}}]
    params = {"model": HAIKU, "max_tokens": 10, "messages": [{"role": "user", "content": content}]}
    assert Budget(1).worst_case_for(params) == estimated(params) * CACHE_WRITE_1H + 10 * OUTPUT


def test_a_request_without_a_model_cannot_be_priced() -> None:
    with pytest.raises(UnpricedModel):
        Budget(1).reserve_for({"max_tokens": 10, "messages": []})


def test_a_budget_of_zero_is_valid_and_refuses_every_request_that_costs_anything() -> None:
    budget = Budget(0)
    assert budget.reserve(HAIKU, 1, 0) is None
    assert budget.reserve_usd(Decimal(0)) is not None  # nothing costs nothing
    with pytest.raises(ValueError, match="USD >= 0"):
        Budget("-0.000001")


@pytest.mark.parametrize(("spent", "granted"), [("0.000629", True), ("0.000630", True), ("0.000631", False)])
def test_a_request_is_reserved_while_spent_plus_reserved_plus_it_stays_within_the_ceiling(
    spent: str, granted: bool
) -> None:
    budget = Budget("0.001", spent_usd=Decimal(spent))  # the worst case below is $0.00037
    assert (budget.reserve(HAIKU, 1_200, 500) is not None) is granted
    assert budget.reserved_usd == (0.00037 if granted else 0.0)


def test_the_reservations_in_flight_count_against_the_ceiling() -> None:
    budget = Budget("0.00074")
    assert budget.reserve(HAIKU, 1_200, 500) is not None and budget.reserve(HAIKU, 1_200, 500) is not None
    assert budget.reserve(HAIKU, 1, 0) is None


def test_a_hold_of_a_known_amount_has_no_model_until_settled_at_that_amount() -> None:
    budget = Budget(1)
    hold = budget.reserve_usd(Decimal("0.25"))
    assert hold is not None and (hold.usd, hold.model, hold.settled) == (Decimal("0.25"), None, False)
    budget.settle_usd(hold, Decimal("0.125"))
    assert hold.settled and (budget.spent_usd, budget.reserved_usd, budget.left_usd) == (0.125, 0.0, 0.875)
    with pytest.raises(ValueError, match=r"^this hold is already settled$"):
        budget.settle_usd(hold, Decimal("0.125"))
    assert budget.spent_usd == 0.125


def test_a_hold_without_a_model_cannot_be_settled_with_a_usage_and_the_error_says_what_to_use() -> None:
    budget = Budget(1)
    hold = budget.reserve_usd(Decimal("0.25"))
    assert hold is not None
    with pytest.raises(ValueError, match=r"^this hold has no model to price a usage at: settle it with settle_usd$"):
        budget.settle(hold, Usage(output_tokens=1))
    assert not hold.settled and budget.reserved_usd == 0.25


def test_settling_in_a_batch_adds_the_real_cost_at_batch_prices() -> None:
    budget = Budget(1, batch=True)
    hold = budget.reserve(HAIKU, 1_200, 500)
    assert hold is not None
    assert budget.settle(hold, Usage(input_tokens=1_000, output_tokens=100)) == (1_000 * INPUT + 100 * OUTPUT) / 2
    assert budget.spent_usd == float((1_000 * INPUT + 100 * OUTPUT) / 2) and budget.reserved_usd == 0


def test_a_cost_without_a_hold_is_added_to_what_was_spent() -> None:
    budget = Budget(1, spent_usd=Decimal("0.5"))
    budget.add_spent(Decimal("0.25"))
    assert (budget.spent_usd, budget.reserved_usd, budget.left_usd) == (0.75, 0.0, 0.25)


def test_a_budget_uses_the_price_table_it_is_given() -> None:
    dearer = load_prices(overrides={HAIKU: {"input": 1.0}})
    assert Budget(1, dearer).worst_case(HAIKU, 1_000, 0) == 1_000 * Decimal(1) / MILLION
    assert estimate_cost([{"model": HAIKU, "max_tokens": 0}], dearer).high_usd == pytest.approx(
        float(estimated({"model": HAIKU, "max_tokens": 0}) * Decimal(1) / MILLION)
    )


def test_the_stop_at_the_budget_says_the_ceiling_what_was_spent_what_is_left_and_the_next_worst_case() -> None:
    budget = Budget(5, spent_usd=Decimal("4.9812"))
    stopped = budget.exceeded(Decimal("0.037"))
    assert isinstance(stopped, BudgetExceeded)
    assert (stopped.limit_usd, stopped.spent_usd, stopped.next_usd) == (5.0, 4.9812, 0.037)
    assert stopped.left_usd == pytest.approx(0.0188)


def test_amounts_are_shown_in_dollars_to_the_millionth_with_thousands_separated() -> None:
    budget = Budget(1234.5, spent_usd=Decimal("0.0188"))
    assert budget.reserve_usd(Decimal("4.9812")) is not None
    assert repr(budget) == "Budget(limit=$1,234.500000, spent=$0.018800, reserved=$4.981200)"


def test_the_preflight_estimate_reads_as_documented() -> None:
    estimate = CostEstimate(120, 14_400, 60_000, 0.00144, 0.03144, batch=False)
    assert estimate.describe() == (
        "120 requests: about 14,400 input tokens (estimated high), at most 60,000 output tokens; "
        "$0.001440 (input only) to $0.031440 (input + max_tokens) at standard prices"
    )
    in_a_batch = CostEstimate(1, 10, 20, 0.5, 1.5, batch=True, unpriced_models=("m-1", "m-2"))
    assert in_a_batch.describe() == (
        "1 requests: about 10 input tokens (estimated high), at most 20 output tokens; "
        "$0.500000 (input only) to $1.500000 (input + max_tokens) at batch prices; no price for m-1, m-2 (not counted)"
    )


def test_the_preflight_estimate_sums_every_request_and_prices_only_the_priced_models() -> None:
    first = {"model": HAIKU, "max_tokens": 100, "messages": [{"role": "user", "content": "First."}]}
    second = compact({"model": HAIKU, "max_tokens": 300, "messages": [{"role": "user", "content": "Second."}]})
    unknown = [{"model": name, "max_tokens": 1_000, "messages": []} for name in ("zz-unknown", "aa-unknown")]
    requests = [first, unknown[0], second, unknown[1]]
    estimate = estimate_cost(requests)
    tokens = [estimated(request) for request in requests]
    assert (estimate.requests, estimate.input_tokens, estimate.max_output_tokens) == (4, sum(tokens), 2_400)
    priced_input = tokens[0] + tokens[2]
    assert estimate.low_usd == float(priced_input * INPUT)
    assert estimate.high_usd == float(priced_input * INPUT + 400 * OUTPUT)
    assert (estimate.batch, estimate.unpriced_models) == (False, ("aa-unknown", "zz-unknown"))
    in_a_batch = estimate_cost(requests, batch=True)
    assert in_a_batch.batch and in_a_batch.high_usd == float((priced_input * INPUT + 400 * OUTPUT) / 2)
    assert in_a_batch.low_usd == float(priced_input * INPUT / 2)
