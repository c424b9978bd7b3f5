"""Prompt caching, emulated: breakpoints write and read entries keyed by the prompt prefix, per key and model.

Facts the tests rely on (Claude docs, Prompt caching): the prefix order is tools, system, messages; a breakpoint
looks back about 20 block boundaries for a hit; at most 4 breakpoints; 1-hour entries before 5-minute ones; entries
live 5 minutes (or 1 hour) and every read refreshes them; a prefix shorter than the model's minimum (512 tokens on
claude-opus-5, 4096 on claude-opus-4-6, 1024 on claude-sonnet-5) is not cached; usage splits the prompt into
`cache_read_input_tokens` + `cache_creation_input_tokens` + `input_tokens`.

The emulator's tokenizer counts a word as one token (`long_text(1000)` is 1000 tokens); a message adds 3, and so does
the request itself. Time is a frozen `Clock`.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from keel.emulator import Clock, Emulator, EmulatorConfig, RateLimits, client

MODEL = "claude-opus-5"
ASK: list[Any] = [{"role": "user", "content": "Summarise it [[keel:words=5]]"}]
EPHEMERAL = {"type": "ephemeral"}


def long_text(words: int) -> str:
    return " ".join(["word"] * words)


def cached_system(words: int = 1000, **cache_control: str) -> list[Any]:
    return [{"type": "text", "text": long_text(words), "cache_control": {**EPHEMERAL, **cache_control}}]


@pytest.fixture
def clock() -> Clock:
    return Clock(speed=0)


@pytest.fixture
def sdk(clock: Clock) -> anthropic.Anthropic:
    return client(Emulator(EmulatorConfig(clock=clock)), _strict_response_validation=True)


def ask(sdk: anthropic.Anthropic, model: str = MODEL, **params: Any) -> anthropic.types.Usage:
    """The usage of one request, checked to add up to what count_tokens says the prompt is."""
    params.setdefault("messages", ASK)
    usage = sdk.messages.create(model=model, max_tokens=50, **params).usage
    counted = sdk.messages.count_tokens(model=model, **params).input_tokens
    assert usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0) == (
        counted
    )
    return usage


def split(usage: anthropic.types.Usage) -> tuple[int, int, int, int]:
    """(cache read, 5-minute write, 1-hour write, uncached input)."""
    assert usage.cache_creation is not None
    creation = usage.cache_creation
    assert usage.cache_creation_input_tokens == creation.ephemeral_5m_input_tokens + creation.ephemeral_1h_input_tokens
    return (
        usage.cache_read_input_tokens or 0,
        creation.ephemeral_5m_input_tokens,
        creation.ephemeral_1h_input_tokens,
        usage.input_tokens,
    )


def test_the_first_request_writes_the_prefix_and_a_repeat_reads_it(sdk: anthropic.Anthropic) -> None:
    first = ask(sdk, system=cached_system())
    read, five, hour, uncached = split(first)
    assert (read, hour) == (0, 0) and five == 1000 and uncached > 0
    assert split(ask(sdk, system=cached_system())) == (1000, 0, 0, uncached)
    other_question = [{"role": "user", "content": "Now list its parts, in a few words [[keel:words=5]]"}]
    read, five, _, more = split(ask(sdk, system=cached_system(), messages=other_question))
    assert (read, five) == (1000, 0) and more > uncached  # only the prefix is shared


def test_without_breakpoints_nothing_is_cached(sdk: anthropic.Anthropic) -> None:
    system = [{"type": "text", "text": long_text(1000)}]
    ask(sdk, system=system)
    read, five, hour, _ = split(ask(sdk, system=system))
    assert read == five == hour == 0


def test_five_minute_entries_expire_unless_read(sdk: anthropic.Anthropic, clock: Clock) -> None:
    ask(sdk, system=cached_system())
    clock.advance(299)
    assert split(ask(sdk, system=cached_system()))[0] == 1000
    clock.advance(299)  # 598 s after the write, 299 s after the read that refreshed it
    assert split(ask(sdk, system=cached_system()))[0] == 1000
    clock.advance(301)
    read, five, _, _ = split(ask(sdk, system=cached_system()))
    assert (read, five) == (0, 1000)


def test_one_hour_entries_outlive_five_minutes(sdk: anthropic.Anthropic, clock: Clock) -> None:
    read, five, hour, _ = split(ask(sdk, system=cached_system(ttl="1h")))
    assert (read, five, hour) == (0, 0, 1000)
    clock.advance(3000)
    assert split(ask(sdk, system=cached_system(ttl="1h")))[0] == 1000
    clock.advance(3601)
    assert split(ask(sdk, system=cached_system(ttl="1h")))[2] == 1000


def test_mixed_lifetimes_split_the_write_as_the_api_bills_it(sdk: anthropic.Anthropic) -> None:
    tool = {
        "name": "lookup",
        "description": long_text(600),
        "input_schema": {"type": "object", "properties": {}},
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    params: dict[str, Any] = {"tools": [tool], "tool_choice": {"type": "none"}, "system": cached_system(700)}
    read, five, hour, _ = split(ask(sdk, **params))
    assert read == 0 and 600 < hour < 700 and five == 700  # tools at 1 h, then the system at 5 min
    assert split(ask(sdk, **params))[:3] == (hour + five, 0, 0)


def test_a_prefix_shorter_than_the_model_minimum_is_not_cached(sdk: anthropic.Anthropic) -> None:
    ask(sdk, system=cached_system(300))  # claude-opus-5 caches from 512 tokens
    assert split(ask(sdk, system=cached_system(300)))[:3] == (0, 0, 0)
    ask(sdk, "claude-opus-4-6", system=cached_system(1000))  # claude-opus-4-6 from 4096
    assert split(ask(sdk, "claude-opus-4-6", system=cached_system(1000)))[:3] == (0, 0, 0)


def test_the_cache_is_per_api_key_and_per_model(clock: Clock) -> None:
    emulator = Emulator(EmulatorConfig(api_key=None, clock=clock))
    tenant_a = client(emulator, api_key="tenant-a", _strict_response_validation=True)
    tenant_b = client(emulator, api_key="tenant-b", _strict_response_validation=True)
    system = cached_system(1500)
    ask(tenant_a, system=system)
    assert split(ask(tenant_b, system=system))[:2] == (0, 1500)  # another organisation writes its own
    assert split(ask(tenant_a, "claude-sonnet-5", system=system))[:2] == (0, 1500)  # another model too
    assert split(ask(tenant_a, system=system))[0] == 1500


def test_a_breakpoint_moving_down_a_conversation_reads_the_previous_turn(sdk: anthropic.Anthropic) -> None:
    opening = {"type": "text", "text": long_text(800)}
    turn_1 = [{"role": "user", "content": [{**opening, "cache_control": EPHEMERAL}]}]
    first = split(ask(sdk, messages=turn_1))
    written = first[1]
    assert written > 800 and first[3] > 0
    reply = {"role": "assistant", "content": "It is a list of words."}
    turn_2 = [
        {"role": "user", "content": [opening]},
        reply,
        {"role": "user", "content": [{"type": "text", "text": "Shorter, please.", "cache_control": EPHEMERAL}]},
    ]
    read, five, _, uncached = split(ask(sdk, messages=turn_2))
    assert read == written and 0 < five < 30 and uncached == first[3]  # only the new turns are written


def test_the_lookback_stops_after_twenty_blocks(sdk: anthropic.Anthropic) -> None:
    opening = {"type": "text", "text": long_text(800)}
    ask(sdk, messages=[{"role": "user", "content": [{**opening, "cache_control": EPHEMERAL}]}])

    def conversation(exchanges: int) -> list[Any]:
        """The opening, then `exchanges` answers and questions (one block each), the last one a breakpoint."""
        turns: list[Any] = [{"role": "user", "content": [opening]}]
        for i in range(exchanges):
            turns += [{"role": "assistant", "content": f"Answer {i}."}, {"role": "user", "content": f"Question {i}."}]
        turns[-1]["content"] = [{"type": "text", "text": turns[-1]["content"], "cache_control": EPHEMERAL}]
        return turns

    assert split(ask(sdk, messages=conversation(9)))[0] > 800  # the entry is 18 blocks back: found
    assert split(ask(sdk, messages=conversation(10)))[0] == 0  # 20 blocks back: beyond the lookback


def test_changing_tool_choice_keeps_the_tools_cache_but_not_the_messages_cache(sdk: anthropic.Anthropic) -> None:
    tool = {"name": "lookup", "description": long_text(600), "input_schema": {"type": "object", "properties": {}}}
    messages = [{"role": "user", "content": [{"type": "text", "text": long_text(600), "cache_control": EPHEMERAL}]}]
    tools = [{**tool, "cache_control": EPHEMERAL}]
    read, five, _, _ = split(ask(sdk, tools=tools, tool_choice={"type": "none"}, messages=messages))
    assert read == 0
    tools_part = split(ask(sdk, tools=tools, tool_choice={"type": "auto"}, messages=messages))
    assert 600 < tools_part[0] < five and tools_part[0] + tools_part[1] == five


def test_automatic_caching_marks_the_last_block(sdk: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": long_text(700)}]
    read, five, _, uncached = split(ask(sdk, messages=messages, cache_control=EPHEMERAL))
    assert read == 0 and five > 700 and uncached > 0
    assert split(ask(sdk, messages=messages, cache_control=EPHEMERAL))[:2] == (five, 0)


def test_breakpoint_rules_are_the_api_400s(sdk: anthropic.Anthropic) -> None:
    five_marks = [{"type": "text", "text": f"Part {i}.", "cache_control": EPHEMERAL} for i in range(5)]
    too_many = "A maximum of 4 blocks with cache_control may be provided. Found 5."
    with pytest.raises(anthropic.BadRequestError, match=too_many):
        sdk.messages.create(model=MODEL, max_tokens=10, system=five_marks, messages=ASK)
    with pytest.raises(anthropic.BadRequestError, match=too_many):
        sdk.messages.count_tokens(model=MODEL, system=five_marks, messages=ASK)
    with pytest.raises(anthropic.BadRequestError, match="Found 5"):  # automatic caching takes a slot
        sdk.messages.create(model=MODEL, max_tokens=10, system=five_marks[:4], messages=ASK, cache_control=EPHEMERAL)
    late_hour = [*cached_system(10), {"type": "text", "text": "More.", "cache_control": {**EPHEMERAL, "ttl": "1h"}}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=10, system=late_hour, messages=ASK)
    assert "system.1.cache_control.ttl: a ttl='1h' must not come after a ttl='5m' cache_control block" in str(
        caught.value
    )


def test_a_stream_reports_its_cache_use_in_message_start(sdk: anthropic.Anthropic) -> None:
    ask(sdk, system=cached_system())
    with sdk.messages.stream(model=MODEL, max_tokens=50, system=cached_system(), messages=ASK) as stream:
        start = next(event for event in stream if event.type == "message_start")
        assert start.message.usage.cache_read_input_tokens == 1000
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 1000 and final.usage.cache_creation_input_tokens == 0


def test_count_tokens_neither_reads_nor_writes_the_cache(sdk: anthropic.Anthropic) -> None:
    counted = sdk.messages.count_tokens(model=MODEL, system=cached_system(), messages=ASK)
    assert sdk.messages.count_tokens(model=MODEL, system=cached_system(), messages=ASK) == counted
    read, five, _, _ = split(ask(sdk, system=cached_system()))
    assert (read, five) == (0, 1000)


def test_a_request_refused_by_the_rate_limit_writes_nothing(clock: Clock) -> None:
    limits = RateLimits(requests_per_minute=1, enforce=True)
    sdk = client(Emulator(EmulatorConfig(clock=clock, rate_limits=limits)), max_retries=0)
    sdk.messages.create(model=MODEL, max_tokens=10, messages=ASK)
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model=MODEL, max_tokens=10, system=cached_system(), messages=ASK)
    clock.advance(60)
    usage = sdk.messages.create(model=MODEL, max_tokens=10, system=cached_system(), messages=ASK).usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 1000)


def test_a_pre_warm_with_max_tokens_0_fills_the_cache(sdk: anthropic.Anthropic) -> None:
    warm = sdk.messages.create(model=MODEL, max_tokens=0, system=cached_system(), messages=ASK)
    assert warm.usage.output_tokens == 0 and warm.usage.cache_creation_input_tokens == 1000
    assert split(ask(sdk, system=cached_system()))[0] == 1000
