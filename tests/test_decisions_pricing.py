"""Costs by value: the long-context tier at its boundary in every path, a prices file's own batch multiplier, zero
prices and counts next to None, and every check of a prices file or an override naming the file and field.

Expected values are computed by hand from the documented billing rules (`keel._pricing`, the notes of
`keel/data/prices.json`): USD per million tokens; batch bills every category at `batch_multiplier`; a prompt
(input + cache writes + cache reads) over `threshold_tokens` bills every price of the request at `multiplier`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Usage as SdkUsage

from keel import ModelPrice, PriceDataError, PriceTable, Usage, load_prices

HAIKU = "claude-haiku-5-5"  # 0.1 / 0.5 / 0.125 / 0.2 / 0.01 per MTok; over 100,000 prompt tokens x5


@pytest.fixture
def prices(monkeypatch: pytest.MonkeyPatch) -> PriceTable:
    monkeypatch.delenv("KEEL_PRICES_FILE", raising=False)
    return load_prices()


def _model(**fields: Any) -> dict[str, Any]:
    return {"input": 1, "output": 2, "cache_write_5m": 3, "cache_write_1h": 4, "cache_read": 0.5, **fields}


def _file(tmp_path: Path, model: dict[str, Any] | None = None, **top: Any) -> Path:
    data = {"as_of": "2027-01-15", "models": {"claude-test-1": model if model is not None else _model()}, **top}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _table(**top: Any) -> PriceTable:
    return PriceTable({"claude-test-1": ModelPrice(1, 2, 3, 4, 0.5)}, as_of=date(2027, 1, 15), **top)


# --- the long-context tier: cost, cost_breakdown and batch_savings agree --------------------------------------


@pytest.mark.parametrize(
    ("counts", "long_context"),
    [
        ({"input_tokens": 100_000}, False),  # exactly the threshold is not over it
        ({"input_tokens": 100_001}, True),
        ({"input_tokens": 60_000, "cache_creation_input_tokens": 40_001}, True),  # 5-minute writes count
        ({"input_tokens": 60_000, "cache_creation_input_tokens": 40_000}, False),
        (
            {
                "input_tokens": 60_000,
                "cache_creation_input_tokens": 40_001,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 40_001},
            },
            True,  # 1-hour writes count
        ),
        ({"input_tokens": 1, "cache_read_input_tokens": 100_000}, True),  # reads count
        ({"input_tokens": 100_000, "output_tokens": 50_000}, False),  # output does not
    ],
)
def test_the_long_context_tier_is_decided_on_the_whole_prompt_in_every_path(
    prices: PriceTable, counts: dict[str, Any], long_context: bool
) -> None:
    breakdown = prices.cost_breakdown(HAIKU, counts)
    assert breakdown is not None and breakdown.long_context is long_context
    tokens = Usage.of(counts)
    per_million = (
        tokens.input_tokens * Decimal("0.1")
        + tokens.output_tokens * Decimal("0.5")
        + tokens.cache_write_5m_tokens * Decimal("0.125")
        + tokens.cache_write_1h_tokens * Decimal("0.2")
        + tokens.cache_read_tokens * Decimal("0.01")
    )
    exact = per_million * (5 if long_context else 1) / 1_000_000
    assert breakdown.total == exact
    assert prices.cost(HAIKU, counts) == float(exact)
    assert prices.cost(HAIKU, counts, batch=True) == float(exact / 2)
    assert prices.batch_savings(HAIKU, counts) == float(exact / 2)


def test_a_long_context_breakdown_multiplies_every_category_output_included(prices: PriceTable) -> None:
    breakdown = prices.cost_breakdown(HAIKU, {"input_tokens": 200_000, "output_tokens": 1_000}, batch=True)
    assert breakdown is not None
    # 200,000 x 0.1 x 5 x 0.5 = 50,000; 1,000 x 0.5 x 5 x 0.5 = 1,250 (per million)
    assert (breakdown.input, breakdown.output) == (Decimal("0.05"), Decimal("0.00125"))
    assert (breakdown.model, breakdown.batch, breakdown.long_context) == (HAIKU, True, True)


def test_a_breakdown_names_the_priced_model_for_an_alias_and_says_whether_batch(prices: PriceTable) -> None:
    breakdown = prices.cost_breakdown("claude-haiku-4-5", {"input_tokens": 1_000})
    assert breakdown is not None
    assert (breakdown.model, breakdown.batch, breakdown.long_context) == ("claude-haiku-4-5-20251001", False, False)
    assert breakdown.input == Decimal("0.001")


def test_a_tier_multiplier_that_is_not_a_whole_number_is_applied_exactly(tmp_path: Path) -> None:
    model = _model(long_context={"threshold_tokens": 10, "multiplier": 2.5})
    table = load_prices(_file(tmp_path, model, batch_multiplier=0.4))
    counts = {"input_tokens": 11, "output_tokens": 3}  # 11 x 1 + 3 x 2 = 17 per million, x 2.5
    batched = Decimal(17) * Decimal("2.5") * Decimal("0.4") / 10**6
    assert table.cost("claude-test-1", counts) == 17 * 2.5 / 1e6
    assert table.cost("claude-test-1", counts, batch=True) == float(batched)
    breakdown = table.cost_breakdown("claude-test-1", counts, batch=True)
    assert breakdown is not None and breakdown.total == batched


# --- the batch multiplier -------------------------------------------------------------------------------------


def test_a_prices_files_own_batch_multiplier_is_used(tmp_path: Path) -> None:
    table = load_prices(_file(tmp_path, batch_multiplier=0.4))
    counts = {"input_tokens": 1_000, "output_tokens": 1_000}  # 1,000 + 2,000 = 3,000 per million
    assert table.batch_multiplier == 0.4
    assert table.cost("claude-test-1", counts, batch=True) == 0.0012
    assert table.batch_savings("claude-test-1", counts) == 0.0018
    breakdown = table.cost_breakdown("claude-test-1", counts, batch=True)
    assert breakdown is not None and breakdown.total == Decimal("0.0012")


def test_a_file_without_batch_multiplier_bills_batches_at_half(tmp_path: Path) -> None:
    table = load_prices(_file(tmp_path))
    assert table.batch_multiplier == 0.5
    assert table.cost("claude-test-1", {"input_tokens": 1_000}, batch=True) == 0.0005


def test_a_batch_multiplier_of_one_is_allowed_and_saves_nothing(tmp_path: Path) -> None:
    table = load_prices(_file(tmp_path, batch_multiplier=1))
    assert table.batch_savings("claude-test-1", {"input_tokens": 1_000}) == 0.0


def test_a_table_built_in_code_bills_batches_at_half_in_usd() -> None:
    table = _table()
    assert (table.batch_multiplier, table.currency, table.source, table.sources) == (0.5, "USD", "", "")
    assert table.cost("claude-test-1", {"output_tokens": 1_000}, batch=True) == 0.001


# --- zero prices, zero counts and None --------------------------------------------------------------------------


def test_zero_prices_are_allowed_and_cost_nothing(tmp_path: Path) -> None:
    model = {"input": 0, "output": 0, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 0}
    table = load_prices(_file(tmp_path, model))
    counts = {"input_tokens": 1_000, "output_tokens": 0, "cache_creation_input_tokens": None}
    assert table.cost("claude-test-1", counts) == 0.0
    assert table.cost("claude-test-1", counts, batch=True) == 0.0
    assert table.batch_savings("claude-test-1", counts) == 0.0
    zero = load_prices(overrides={"claude-opus-5": {"input": 0, "cache_read": 0}})
    assert zero.cost("claude-opus-5", {"input_tokens": 1_000, "output_tokens": 1_000}) == 0.025


@pytest.mark.parametrize(
    "counts",
    [
        {"input_tokens": 0, "output_tokens": 0},
        {"input_tokens": 0, "output_tokens": None, "cache_creation_input_tokens": 0, "cache_read_input_tokens": None},
        {"input_tokens": None, "output_tokens": 0, "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                                                      "ephemeral_1h_input_tokens": None}},
        SdkUsage(input_tokens=0, output_tokens=0, cache_creation_input_tokens=None, cache_read_input_tokens=0),
    ],
)  # fmt: skip
def test_zero_counts_next_to_none_are_read_as_zero_and_cost_nothing(prices: PriceTable, counts: Any) -> None:
    assert Usage.of(counts) == Usage(0, 0, 0, 0, 0)
    assert prices.cost("claude-opus-5", counts) == 0.0
    breakdown = prices.cost_breakdown("claude-opus-5", counts)
    assert breakdown is not None and breakdown.total == 0


# --- exactness --------------------------------------------------------------------------------------------------


def test_a_cost_is_the_float_nearest_the_exact_product_even_for_huge_counts(prices: PriceTable) -> None:
    counts = {"input_tokens": 123_456_789_012_345_678_901, "cache_read_input_tokens": 98_765_432_109_876_543_211}
    exact = (Decimal(counts["input_tokens"]) * 5 + Decimal(counts["cache_read_input_tokens"]) * Decimal("0.5")) / 10**6
    assert prices.cost("claude-opus-5", counts) == float(exact)
    breakdown = load_prices().cost_breakdown("claude-opus-5", counts)  # a fresh table: nothing cached yet
    assert breakdown is not None and breakdown.total == exact


# --- unknown models ---------------------------------------------------------------------------------------------


def test_the_warning_for_an_unknown_model_says_where_the_prices_came_from_and_how_to_add_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert _table().cost("claude-unknown-9", {"input_tokens": 1}) is None
    (record,) = [r for r in caplog.records if r.name == "keel"]
    message = record.getMessage()
    assert message.startswith("keel has no price for model 'claude-unknown-9' (prices as of 2027-01-15 from code)")
    assert "its cost is reported as None" in message
    assert message.endswith("Add it with load_prices(overrides={'claude-unknown-9': {...}}) or a prices file.")


def test_an_alias_must_point_to_a_priced_model() -> None:
    with pytest.raises(ValueError, match=r"^alias 'claude-x' points to 'claude-y', which has no price$"):
        _table(aliases={"claude-x": "claude-y"})


# --- overrides ---------------------------------------------------------------------------------------------------


def test_overrides_keep_the_tables_date_currency_multiplier_and_say_where_they_came_from(tmp_path: Path) -> None:
    table = load_prices(_file(tmp_path, batch_multiplier=0.4, currency="EUR", sources="our contract"))
    patched = table.with_overrides({"claude-test-1": {"input": 2}})
    assert (patched.as_of, patched.currency, patched.batch_multiplier, patched.sources) == (
        date(2027, 1, 15),
        "EUR",
        0.4,
        "our contract",
    )
    assert patched.source == f"{table.source} + overrides"
    assert _table().with_overrides({"claude-test-1": {"input": 2}}).source == "overrides"
    assert patched.cost("claude-test-1", {"input_tokens": 1_000}, batch=True) == 0.0008  # 2 x 0.4


def test_an_override_can_remove_or_set_the_long_context_tier(prices: PriceTable) -> None:
    flat = prices.with_overrides({HAIKU: {"long_context_threshold": None}})
    assert flat.cost(HAIKU, {"input_tokens": 200_000}) == 0.02  # 200,000 x 0.1, no x5
    tiered = prices.with_overrides({"claude-opus-5": {"long_context_threshold": 1, "long_context_multiplier": 2}})
    assert tiered.cost("claude-opus-5", {"input_tokens": 2}) == 0.00002  # 2 x 5 x 2


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        ({"note": "mine"}, "claude-opus-5.note", "unknown field (known: cache_read, cache_write_1h, cache_write_5m,"),
        ({"long_context_threshold": 0}, "claude-opus-5.long_context_threshold", "expected a positive whole number"),
        ({"long_context_threshold": True}, "claude-opus-5.long_context_threshold", "expected a positive whole number"),
        ({"long_context_multiplier": 0}, "claude-opus-5.long_context_multiplier", "expected a positive number"),
        ({"input": -1}, "claude-opus-5.input", "expected a non-negative number, got -1"),
        ({"output": "2"}, "claude-opus-5.output", "expected a number, got '2'"),
    ],
)
def test_a_bad_override_names_overrides_the_model_and_the_field(
    prices: PriceTable, patch: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(PriceDataError) as caught:
        prices.with_overrides({"claude-opus-5": patch})
    assert (caught.value.source, caught.value.field) == ("overrides", field)
    assert str(caught.value).startswith(f"overrides: {field}: {reason}")


def test_an_override_that_is_neither_a_price_nor_a_mapping_is_refused(prices: PriceTable) -> None:
    with pytest.raises(PriceDataError) as caught:
        prices.with_overrides({"claude-opus-5": 3})  # type: ignore[dict-item]
    assert (caught.value.source, caught.value.field) == ("overrides", "claude-opus-5")
    assert str(caught.value) == "overrides: claude-opus-5: expected a ModelPrice or a mapping, got 3"


def test_a_threshold_of_one_token_is_valid(prices: PriceTable) -> None:
    assert prices.with_overrides({HAIKU: {"long_context_threshold": 1}}).cost(HAIKU, {"input_tokens": 2}) == 0.000001


# --- a prices file -----------------------------------------------------------------------------------------------


def test_a_prices_file_gives_its_currency_sources_notes_and_long_context(tmp_path: Path) -> None:
    tiered = _model(long_context={"threshold_tokens": 10, "multiplier": 3}, note="our deal", aliases=["claude-t"])
    table = load_prices(_file(tmp_path, tiered, currency="EUR", sources="contract", notes="a note", _comment="x"))
    assert (table.currency, table.sources, table.source) == ("EUR", "contract", str(tmp_path / "prices.json"))
    assert table.price_for("claude-t") == ModelPrice(1, 2, 3, 4, 0.5, 10, 3, "our deal")
    plain = load_prices(_file(tmp_path, _model(_comment="x"), notes=["one", "two"]))
    assert plain.price_for("claude-test-1") == ModelPrice(1, 2, 3, 4, 0.5, None, 1.0, "")
    assert plain.currency == "USD" and plain.sources == ""


def test_a_price_built_in_code_has_no_long_context_tier_and_no_note() -> None:
    price = ModelPrice(1, 2, 3, 4, 0.5)
    assert (price.long_context_threshold, price.long_context_multiplier, price.note) == (None, 1.0, "")


def test_the_packaged_file_names_itself(prices: PriceTable) -> None:
    assert prices.source == "keel/data/prices.json"


@pytest.mark.parametrize(
    ("model", "top", "field", "reason"),
    [
        ("not an object", {}, "models.claude-test-1", "expected an object, got 'not an object'"),
        ({"input": 1}, {}, "models.claude-test-1.output", "missing"),
        (_model(note=3), {}, "models.claude-test-1.note", "expected a string, got 3"),
        (_model(aliases="c"), {}, "models.claude-test-1.aliases", "expected a list of model ids, got 'c'"),
        (_model(aliases=[""]), {}, "models.claude-test-1.aliases", "expected a list of model ids"),
        (_model(aliases=[3]), {}, "models.claude-test-1.aliases", "expected a list of model ids"),
        (_model(long_context={"threshold_tokens": 10}), {}, "models.claude-test-1.long_context",
         'expected {"threshold_tokens": N, "multiplier": X}, got {\'threshold_tokens\': 10}'),
        (_model(long_context=[10, 2]), {}, "models.claude-test-1.long_context", "expected {"),
        (_model(long_context={"threshold_tokens": 10, "multiplier": 0}), {},
         "models.claude-test-1.long_context.multiplier", "expected a positive number, got 0"),
        (_model(long_context={"threshold_tokens": 10.5, "multiplier": 2}), {},
         "models.claude-test-1.long_context.threshold_tokens", "expected a positive whole number of tokens"),
        (_model(input=True), {}, "models.claude-test-1.input", "expected a number, got True"),
        (_model(input=float("nan")), {}, "models.claude-test-1.input", "expected a number, got nan"),
        (_model(cache_read=None), {}, "models.claude-test-1.cache_read", "expected a number, got None"),
        (_model(unknown=1), {}, "models.claude-test-1.unknown", "unknown field (known: aliases, cache_read,"),
        (None, {"currency": 978}, "currency", "expected a string, got 978"),
        (None, {"sources": ["a"]}, "sources", "expected a string, got ['a']"),
        (None, {"notes": 3}, "notes", "expected a string or a list of strings, got 3"),
        (None, {"batch_multiplier": 0}, "batch_multiplier", "expected a positive number, got 0"),
        (None, {"batch_multiplier": 1.01}, "batch_multiplier", "expected at most 1, got 1.01"),
        (None, {"models": []}, "models", "expected a non-empty object of model id -> prices"),
        (None, {"extra": 1}, "extra", "unknown field (known: as_of, batch_multiplier, currency, models, notes,"),
    ],
)  # fmt: skip
def test_a_bad_prices_file_names_the_file_the_field_and_the_reason(
    tmp_path: Path, model: Any, top: dict[str, Any], field: str, reason: str
) -> None:
    path = _file(tmp_path, model, **top)
    with pytest.raises(PriceDataError) as caught:
        load_prices(path)
    assert (caught.value.source, caught.value.field) == (str(path), field)
    assert str(caught.value).startswith(f"{path}: {field}: {reason}")


def test_a_prices_file_that_is_not_an_object_or_not_there_is_named(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(PriceDataError) as caught:
        load_prices(path)
    assert (caught.value.source, caught.value.field) == (str(path), None)
    assert str(caught.value) == f"{path}: expected a JSON object at the top level"
    missing = tmp_path / "missing.json"
    with pytest.raises(PriceDataError) as gone:
        load_prices(missing)
    assert (gone.value.source, gone.value.field) == (str(missing), None)
    assert str(gone.value) == f"{missing}: cannot read the prices file: No such file or directory"


# --- Usage.of ----------------------------------------------------------------------------------------------------


def test_a_usage_built_without_counts_counts_nothing() -> None:
    assert Usage() == Usage(0, 0, 0, 0, 0) and Usage().prompt_tokens == 0


def test_a_usage_is_read_as_it_is() -> None:
    usage = Usage(1, 2, 3, 4, 5)
    assert Usage.of(usage) is usage


def test_counts_are_whole_numbers_whatever_form_they_came_in() -> None:
    read = Usage.of({"input_tokens": 3.0, "output_tokens": 4.0, "cache_creation_input_tokens": 3.0,
                     "cache_read_input_tokens": 0, "cache_creation": {"ephemeral_5m_input_tokens": 1.0,
                                                                     "ephemeral_1h_input_tokens": 2.0}})  # fmt: skip
    assert read == Usage(3, 4, 1, 2, 0)
    assert Usage.of({"input_tokens": 3.0, "output_tokens": 4.0, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 0}).input_tokens.__class__ is int  # fmt: skip
    assert {type(value) for value in (read.input_tokens, read.output_tokens, read.cache_write_5m_tokens,
                                      read.cache_write_1h_tokens, read.cache_read_tokens)} == {int}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Breakdown:
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


@dataclass(frozen=True, slots=True)
class _Counts:
    """A usage-like object of another library: attributes, no `__dict__`."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation: _Breakdown | None


@dataclass(frozen=True, slots=True)
class _OutputOnly:
    output_tokens: int


def test_any_object_with_the_usage_fields_is_read_by_its_attributes() -> None:
    assert Usage.of(_Counts(5, 6, 10, 7, _Breakdown(2, 3))) == Usage(5, 6, 7, 3, 7)
    assert Usage.of(_Counts(5, 6, 10, 7, None)) == Usage(5, 6, 10, 0, 7)
    assert Usage.of(_OutputOnly(7)) == Usage(0, 7, 0, 0, 0)  # the fields it lacks count 0


def test_a_bad_count_names_its_field() -> None:
    with pytest.raises(ValueError, match=r"^usage\.output_tokens: expected a whole number of tokens, got 2\.5$"):
        Usage.of({"output_tokens": 2.5})
    with pytest.raises(ValueError, match=r"^usage\.cache_creation\.ephemeral_5m_input_tokens: token count -1 is"):
        Usage.of({"cache_creation": {"ephemeral_5m_input_tokens": -1}})
    with pytest.raises(TypeError, match=r"^usage\.cache_read_input_tokens: expected a token count, got '7'$"):
        Usage.of({"cache_read_input_tokens": "7"})
    with pytest.raises(TypeError, match=r"^expected a usage object or mapping with token counts, got int$"):
        Usage.of(42)
