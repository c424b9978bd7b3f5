"""Prices and costs: hand-computed expectations, the packaged data file, user files and overrides."""

from __future__ import annotations

import json
import logging
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageDeltaUsage
from anthropic.types import Usage as SdkUsage

from keel import Usage
from keel._pricing import ModelPrice, PriceDataError, PriceTable, load_prices

API_FACTS_MODELS = [
    "claude-fable-5-2",
    "claude-mythos-5-2",
    "claude-fable-5-1",
    "claude-mythos-5-1",
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-5-5",
    "claude-opus-5",
    "claude-sonnet-5-5",
    "claude-sonnet-5",
    "claude-haiku-5-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-opus-4-6",
    "claude-opus-4-5-20251101",
    "claude-opus-4-5",
    "claude-sonnet-4-6",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-5",
    "claude-haiku-4-5-20251001",
    "claude-haiku-4-5",
]


@pytest.fixture
def prices(monkeypatch: pytest.MonkeyPatch) -> PriceTable:
    monkeypatch.delenv("KEEL_PRICES_FILE", raising=False)
    return load_prices()


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def _minimal(**model: Any) -> dict[str, Any]:
    entry = {"input": 1, "output": 2, "cache_write_5m": 3, "cache_write_1h": 4, "cache_read": 0.5}
    entry.update(model)
    return {"as_of": "2027-01-15", "models": {"claude-test-1": entry}}


# --- the packaged table -----------------------------------------------------------------------


def test_packaged_table_is_dated_and_covers_every_model(prices: PriceTable) -> None:
    assert prices.as_of == date(2026, 11, 24)
    assert "platform.claude.com" in prices.sources
    for model in API_FACTS_MODELS:
        assert prices.price_for(model) is not None, model
    assert prices.canonical("claude-opus-4-5") == "claude-opus-4-5-20251101"
    assert prices.price_for("claude-haiku-4-5") is prices.price_for("claude-haiku-4-5-20251001")


def test_every_emulator_model_and_alias_has_a_price(prices: PriceTable) -> None:
    catalog = json.loads(resources.files("keel.emulator").joinpath("data/models.json").read_text(encoding="utf-8"))
    for spec in catalog["models"]:
        for model in [spec["id"], *spec["aliases"]]:
            assert prices.price_for(model) is not None, model


def test_packaged_prices_match_api_facts(prices: PriceTable) -> None:
    expected = {
        "claude-fable-5-2": (8, 40, 10, 16, 0.2),
        "claude-fable-5-1": (10, 50, 12.5, 20, 0.25),
        "claude-mythos-5": (10, 50, 12.5, 20, 1.0),
        "claude-opus-5-5": (4, 20, 5, 8, 0.2),
        "claude-opus-5": (5, 25, 6.25, 10, 0.5),
        "claude-sonnet-5": (2, 10, 2.5, 4, 0.2),
        "claude-opus-4-8": (5, 25, 6.25, 10, 0.5),
        "claude-sonnet-4-5": (3, 15, 3.75, 6, 0.3),
        "claude-haiku-4-5": (1, 5, 1.25, 2, 0.1),
    }
    for model, row in expected.items():
        price = prices.price_for(model)
        assert price is not None
        assert (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read) == row, model
        assert price.long_context_threshold is None
    haiku = prices.price_for("claude-haiku-5-5")
    assert haiku is not None
    assert (haiku.input, haiku.output, haiku.cache_write_5m, haiku.cache_write_1h, haiku.cache_read) == (
        0.1,
        0.5,
        0.125,
        0.2,
        0.01,
    )
    assert (haiku.long_context_threshold, haiku.long_context_multiplier) == (100_000, 5)


# --- costs ------------------------------------------------------------------------------------


def test_cost_with_5m_and_1h_cache_writes_and_reads(prices: PriceTable) -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1200, "ephemeral_1h_input_tokens": 800},
        "cache_read_input_tokens": 10_000,
    }
    # opus-5: 1000*5 + 500*25 + 1200*6.25 + 800*10 + 10000*0.5 = 5000 + 12500 + 7500 + 8000 + 5000 = 38000 / 1e6
    assert prices.cost("claude-opus-5", usage) == 0.038
    breakdown = prices.cost_breakdown("claude-opus-5", usage)
    assert breakdown is not None
    assert (breakdown.cache_write_5m, breakdown.cache_write_1h, breakdown.cache_read) == (
        Decimal("0.0075"),
        Decimal("0.008"),
        Decimal("0.005"),
    )
    assert breakdown.total == Decimal("0.038")
    # batch: 50% of everything, caching included
    assert prices.cost("claude-opus-5", usage, batch=True) == 0.019
    assert prices.batch_savings("claude-opus-5", usage) == 0.019


def test_cache_creation_without_breakdown_bills_5m_writes(prices: PriceTable) -> None:
    usage = {"input_tokens": 100, "output_tokens": 200, "cache_creation_input_tokens": 1000}
    # sonnet-4-6: 100*3 + 200*15 + 1000*3.75 = 300 + 3000 + 3750 = 7050 / 1e6
    assert prices.cost("claude-sonnet-4-6", usage) == 0.00705


def test_sdk_usage_objects(prices: PriceTable) -> None:
    usage = SdkUsage(
        input_tokens=1234,
        output_tokens=56,
        cache_creation_input_tokens=1000,
        cache_read_input_tokens=0,
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000},  # type: ignore[arg-type]
    )
    # haiku-4-5: 1234*1 + 56*5 + 1000*2 = 1234 + 280 + 2000 = 3514 / 1e6
    assert prices.cost("claude-haiku-4-5-20251001", usage) == 0.003514
    # a streamed message_delta usage may carry only output tokens
    assert prices.cost("claude-opus-5-5", MessageDeltaUsage(output_tokens=2000)) == 0.04  # 2000*20 / 1e6


def test_usage_read_from_sdk_models_dicts_and_plain_objects_alike(prices: PriceTable) -> None:
    fields = {
        "input_tokens": 1234,
        "output_tokens": 56,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
    }
    as_object = SimpleNamespace(**{**fields, "cache_creation": SimpleNamespace(**fields["cache_creation"])})
    sdk_model = SdkUsage.construct(**fields)  # as the SDK builds it from a response: no validation
    expected = Usage.of(fields)
    assert expected == Usage(1234, 56, 500, 1000, 7)
    assert Usage.of(as_object) == Usage.of(sdk_model) == Usage.of(SdkUsage(**fields)) == expected
    assert prices.cost("claude-haiku-4-5-20251001", as_object) == prices.cost("claude-haiku-4-5-20251001", fields)
    # a breakdown short of the total: the rest is billed as 5-minute writes; None counts as 0
    short = {**fields, "cache_creation": {"ephemeral_5m_input_tokens": None, "ephemeral_1h_input_tokens": 1000}}
    assert Usage.of(short).cache_write_5m_tokens == 500
    with pytest.raises(TypeError, match="input_tokens"):
        Usage.of({**fields, "input_tokens": True})  # a bool is not a token count
    with pytest.raises(ValueError, match=r"cache_creation\.ephemeral_1h_input_tokens"):
        Usage.of({**fields, "cache_creation": {"ephemeral_1h_input_tokens": -1}})
    assert Usage.of({"output_tokens": 3.0}).output_tokens == 3  # a whole float is accepted


def test_haiku_5_5_long_prompt_tier(prices: PriceTable) -> None:
    at_threshold = {"input_tokens": 100_000, "output_tokens": 1000}
    # 100000*0.1 + 1000*0.5 = 10000 + 500 = 10500 / 1e6: exactly 100k is not over
    assert prices.cost("claude-haiku-5-5", at_threshold) == 0.0105
    over = {"input_tokens": 90_000, "cache_read_input_tokens": 10_001, "output_tokens": 1000}
    # prompt 100,001 > 100k: x5 on everything: 90000*0.5 + 10001*0.05 + 1000*2.5 = 45000 + 500.05 + 2500 = 48000.05
    breakdown = prices.cost_breakdown("claude-haiku-5-5", over)
    assert breakdown is not None and breakdown.long_context
    assert prices.cost("claude-haiku-5-5", over) == 0.04800005
    assert prices.cost("claude-haiku-5-5", over, batch=True) == 0.024000025
    # cache writes count toward the prompt too
    assert prices.cost_breakdown(
        "claude-haiku-5-5", {"input_tokens": 1, "cache_creation_input_tokens": 100_000}
    ).long_context  # type: ignore[union-attr]


def test_aliases_cost_the_same(prices: PriceTable) -> None:
    usage = {"input_tokens": 3000, "output_tokens": 700}
    # opus-4-5: 3000*5 + 700*25 = 15000 + 17500 = 32500 / 1e6
    assert prices.cost("claude-opus-4-5", usage) == prices.cost("claude-opus-4-5-20251101", usage) == 0.0325
    assert prices.cost("claude-sonnet-4-5", usage) == 0.0195  # 9000 + 10500


def test_real_message_from_the_emulator(keel_anthropic: anthropic.Anthropic, prices: PriceTable) -> None:
    message = keel_anthropic.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=200,
        messages=[{"role": "user", "content": "[[keel:words=40]] write something"}],
    )
    usage = message.usage
    assert usage.input_tokens > 0 and usage.output_tokens >= 40
    # sonnet-4-6: $3 in, $15 out per million
    expected = float((Decimal(usage.input_tokens) * 3 + Decimal(usage.output_tokens) * 15) / 1_000_000)
    assert prices.cost(message.model, usage) == expected
    assert prices.message_cost(message) == expected
    assert prices.message_cost(message, batch=True) == expected / 2
    assert prices.batch_savings(message.model, usage) == expected / 2


def test_usage_of_validation() -> None:
    counts = Usage.of(
        {"cache_creation_input_tokens": 500, "cache_creation": {"ephemeral_1h_input_tokens": 100}, "input_tokens": None}
    )
    # the part of cache_creation_input_tokens the breakdown does not cover is billed as 5m writes
    assert counts == Usage(0, 0, 400, 100, 0) and counts.prompt_tokens == 500 and counts.cache_write_tokens == 500
    with pytest.raises(ValueError, match="negative"):
        Usage.of({"input_tokens": -1})
    with pytest.raises(TypeError, match="usage object"):
        Usage.of(42)


# --- unknown models ---------------------------------------------------------------------------


def test_unknown_model_warns_once_per_model_per_table(prices: PriceTable, caplog: pytest.LogCaptureFixture) -> None:
    usage = {"input_tokens": 10, "output_tokens": 10}
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert prices.cost("claude-unknown-9", usage) is None
        assert prices.cost("claude-unknown-9", usage, batch=True) is None
        assert prices.batch_savings("claude-unknown-9", usage) is None
        assert prices.cost("claude-other-1", usage) is None
    records = [r for r in caplog.records if r.name == "keel"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert "claude-unknown-9" in records[0].getMessage() and "claude-other-1" in records[1].getMessage()
    assert prices.price_for("claude-unknown-9") is None

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert load_prices().cost("claude-unknown-9", usage) is None  # a new table warns again
    assert len([r for r in caplog.records if r.name == "keel"]) == 1


# --- user files, env var, overrides -----------------------------------------------------------


def test_user_file_replaces_the_packaged_one(tmp_path: Path, prices: PriceTable) -> None:
    table = load_prices(_write(tmp_path, _minimal(aliases=["claude-test"])))
    assert table.as_of == date(2027, 1, 15)
    assert table.price_for("claude-opus-5") is None
    # 1000*1 + 1000*2 = 3000 / 1e6
    assert table.cost("claude-test", {"input_tokens": 1000, "output_tokens": 1000}) == 0.003


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_PRICES_FILE", str(_write(tmp_path, _minimal())))
    table = load_prices()
    assert table.models == ("claude-test-1",)
    assert table.source.endswith("prices.json")
    monkeypatch.setenv("KEEL_PRICES_FILE", "")
    assert "claude-opus-5" in load_prices().models


def test_overrides_patch_single_models(prices: PriceTable) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 1000}
    table = load_prices(
        overrides={
            "claude-sonnet-5": {"input": 3, "output": 15},
            "claude-opus-4-5": {"output": 20},  # an alias patches its model
            "claude-new-1": ModelPrice(1, 2, 1.25, 2, 0.1),
            "claude-new-2": {"input": 2, "output": 4, "cache_write_5m": 2.5, "cache_write_1h": 4, "cache_read": 0.2},
        }
    )
    assert table.cost("claude-sonnet-5", usage) == 0.018  # 3000 + 15000
    assert prices.cost("claude-sonnet-5", usage) == 0.012  # the packaged table is untouched
    assert (
        table.cost("claude-opus-4-5-20251101", usage) == table.cost("claude-opus-4-5", usage) == 0.025
    )  # 5000 + 20000
    assert table.cost("claude-new-1", usage) == 0.003
    assert table.cost("claude-new-2", usage, batch=True) == 0.003
    assert table.cost("claude-opus-5", usage) == prices.cost("claude-opus-5", usage)
    patched = prices.with_overrides({"claude-haiku-5-5": {"long_context_threshold": 200_000}})
    assert patched.cost("claude-haiku-5-5", {"input_tokens": 150_000}) == 0.015  # under the new threshold


def test_bad_overrides_name_the_model_and_field(prices: PriceTable) -> None:
    with pytest.raises(PriceDataError, match=r"overrides: claude-new-3: .*missing \['cache_write_5m'"):
        prices.with_overrides({"claude-new-3": {"input": 1, "output": 2}})
    with pytest.raises(PriceDataError, match=r"claude-opus-5\.inptu: unknown field"):
        prices.with_overrides({"claude-opus-5": {"inptu": 1}})
    with pytest.raises(PriceDataError, match=r"claude-opus-5\.input: expected a non-negative number"):
        prices.with_overrides({"claude-opus-5": {"input": -1}})


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (_minimal(input="abc"), "models.claude-test-1.input", "expected a number, got 'abc'"),
        (_minimal(output=-2), "models.claude-test-1.output", "non-negative"),
        (_minimal(cache_write5m=1), "models.claude-test-1.cache_write5m", "unknown field"),
        (
            {"as_of": "2027-01-15", "models": {"claude-test-1": {"input": 1, "output": 2}}},
            "models.claude-test-1.cache_write_5m",
            "missing",
        ),
        (_minimal(long_context={"threshold_tokens": 0, "multiplier": 2}), "long_context.threshold_tokens", "positive"),
        (_minimal(aliases=["claude-test-1"]), "models.claude-test-1.aliases", "already a model id"),
        ({**_minimal(), "as_of": "soon"}, "as_of", "expected a date"),
        ({"models": _minimal()["models"]}, "as_of", "expected a date"),
        ({**_minimal(), "unit": "per thousand tokens"}, "unit", "per million tokens"),
        ({**_minimal(), "batch_multiplier": 2}, "batch_multiplier", "at most 1"),
        ({**_minimal(), "modles": {}}, "modles", "unknown field"),
        ({"as_of": "2027-01-15", "models": {}}, "models", "non-empty"),
    ],
)
def test_bad_price_file_names_file_and_field(tmp_path: Path, data: dict[str, Any], field: str, reason: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(PriceDataError) as caught:
        load_prices(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert field in message and reason in message
    assert caught.value.field is not None and caught.value.field.endswith(field.split(".")[-1])


def test_unreadable_or_invalid_json_file(tmp_path: Path) -> None:
    with pytest.raises(PriceDataError, match="cannot read the prices file"):
        load_prices(tmp_path / "missing.json")
    path = _write(tmp_path, '{"as_of": "2027-01-15",\n "models": {,}}')
    with pytest.raises(PriceDataError, match=r"prices\.json: not valid JSON \(line 2"):
        load_prices(path)
