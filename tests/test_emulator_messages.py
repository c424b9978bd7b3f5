"""The official SDK (strict validation) against the emulator: create and stream for every outcome."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

MODEL = "claude-sonnet-5-5"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["city", "units"],
    },
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def create_and_stream(sdk: anthropic.Anthropic, **params: Any) -> tuple[Any, Any, str | None]:
    """The same request made twice: non-streaming, and streamed to its final message."""
    created = sdk.messages.create(**params)
    with sdk.messages.stream(**params) as stream:
        for _ in stream:
            pass
        final = stream.get_final_message()
        request_id = stream.request_id
    return created, final, request_id


def same_message(a: Any, b: Any) -> bool:
    """Equal except for the message id (ids are unique per response, as on the real API)."""
    return bool(a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"}))


def test_text_answer_streams_to_the_same_message(sdk: anthropic.Anthropic) -> None:
    created, final, request_id = create_and_stream(sdk, model=MODEL, max_tokens=300, messages=user("Hello"))
    assert created.stop_reason == "end_turn"
    assert created.content[0].type == "text" and created.content[0].text
    assert created._request_id and created._request_id.startswith("req_")
    assert request_id and request_id.startswith("req_") and request_id != created._request_id
    assert same_message(created, final)
    assert created.id.startswith("msg_01") and created.id != final.id


def test_same_request_same_answer_and_seed_changes_it(keel_anthropic: anthropic.Anthropic) -> None:
    from keel.emulator import Emulator, EmulatorConfig, client

    first = keel_anthropic.messages.create(model=MODEL, max_tokens=300, messages=user("Tell me a story"))
    again = keel_anthropic.messages.create(model=MODEL, max_tokens=300, messages=user("Tell me a story"))
    other = client(Emulator(EmulatorConfig(seed=99))).messages.create(
        model=MODEL, max_tokens=300, messages=user("Tell me a story")
    )
    assert first.content == again.content
    assert other.content != first.content


def test_reply_directive_and_stop_sequence(sdk: anthropic.Anthropic) -> None:
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": user("Count [[keel:reply=one two three END four five]]"),
        "stop_sequences": ["NEVER", "END"],
    }
    created, final, _ = create_and_stream(sdk, **params)
    assert created.stop_reason == "stop_sequence"
    assert created.stop_sequence == "END"
    assert created.content[0].text == "one two three "
    assert same_message(created, final)


def test_max_tokens_cuts_mid_text_at_exactly_max_tokens(sdk: anthropic.Anthropic) -> None:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 7, "messages": user("Go on [[keel:words=50]]")}
    created, final, _ = create_and_stream(sdk, **params)
    assert created.stop_reason == "max_tokens"
    assert created.usage.output_tokens == 7
    assert len(created.content[0].text.split()) == 7
    assert same_message(created, final)


def test_usage_matches_count_tokens(sdk: anthropic.Anthropic) -> None:
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": [{"type": "text", "text": "And of Italy, please?"}]},
    ]
    counted = sdk.messages.count_tokens(model=MODEL, messages=messages, system="Be brief.", tools=[WEATHER_TOOL])
    created = sdk.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=messages,
        system="Be brief.",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
    )
    assert counted.input_tokens == created.usage.input_tokens > 20


def test_tool_use_input_is_valid_and_streams_as_partial_json(sdk: anthropic.Anthropic) -> None:
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 500,
        "tools": [WEATHER_TOOL],
        "messages": user("What's the weather in Paris? [[keel:tool=get_weather]]"),
    }
    created = sdk.messages.create(**params)
    assert created.stop_reason == "tool_use"
    tool = created.content[-1]
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.id.startswith("toolu_01")
    assert set(tool.input) == {"city", "units"} and tool.input["units"] in ("celsius", "fahrenheit")
    with sdk.messages.stream(**params) as stream:
        deltas = [
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        final = stream.get_final_message()
    assert deltas[0] == "" and len(deltas) > 2
    assert same_message(final, created) is False  # tool ids are unique per response...
    assert final.content[-1].input == tool.input  # ...the input is the same


def test_tool_loop_ends_with_text_after_tool_results(keel_anthropic: anthropic.Anthropic) -> None:
    first = keel_anthropic.messages.create(
        model=MODEL, max_tokens=300, tools=[WEATHER_TOOL], messages=user("Weather in Rome?")
    )
    assert first.stop_reason == "tool_use"
    tool = next(block for block in first.content if block.type == "tool_use")
    second = keel_anthropic.messages.create(
        model=MODEL,
        max_tokens=300,
        tools=[WEATHER_TOOL],
        messages=[
            *user("Weather in Rome?"),
            first.to_param(),
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "21 C, sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_forced_tool_choice_gives_only_the_tool_call(keel_anthropic: anthropic.Anthropic) -> None:
    message = keel_anthropic.messages.create(
        model="claude-haiku-5-5",
        max_tokens=300,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=user("anything"),
    )
    assert [block.type for block in message.content] == ["tool_use"]


@pytest.mark.parametrize("category", ["cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms"])
def test_refusal_with_each_category(sdk: anthropic.Anthropic, category: str) -> None:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": user(f"x [[keel:refuse={category}]]")}
    created, final, _ = create_and_stream(sdk, **params)
    assert created.stop_reason == "refusal"
    assert created.content == []
    assert created.stop_details is not None
    assert created.stop_details.category == category and created.stop_details.explanation
    assert created.usage.output_tokens == 0
    assert same_message(created, final)


def test_refusal_without_category(keel_anthropic: anthropic.Anthropic) -> None:
    message = keel_anthropic.messages.create(model=MODEL, max_tokens=100, messages=user("[[keel:refuse=null]]"))
    assert message.stop_details is not None
    assert message.stop_details.category is None and message.stop_details.explanation is None


@pytest.mark.parametrize(
    ("directive", "stop_reason"), [("context-full", "model_context_window_exceeded"), ("empty", "end_turn")]
)
def test_other_outcomes(sdk: anthropic.Anthropic, directive: str, stop_reason: str) -> None:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": user(f"x [[keel:{directive}]]")}
    created, final, _ = create_and_stream(sdk, **params)
    assert created.stop_reason == stop_reason
    assert same_message(created, final)
    if directive == "empty":
        assert created.content == [] and 2 <= created.usage.output_tokens <= 3
    else:
        assert created.content[0].type == "text" and created.stop_details is None


def test_pause_turn_ends_in_a_server_tool_call_and_resumes(sdk: anthropic.Anthropic) -> None:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": user("search [[keel:pause]]")}
    created, final, _ = create_and_stream(sdk, **params)
    assert created.stop_reason == "pause_turn"
    assert [block.type for block in created.content] == ["text", "server_tool_use"]
    assert created.content[1].name == "web_search" and created.content[1].input["query"]
    assert final.content[0].text == created.content[0].text and final.content[1].input == created.content[1].input
    # the paused response goes back as-is as the assistant turn (not a prefill), and the turn goes on
    resumed = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=[*params["messages"], {"role": "assistant", "content": created.content}]
    )
    assert resumed.stop_reason == "end_turn" and resumed.content[0].type == "text"


def test_context_window_is_real(keel_anthropic: anthropic.Anthropic) -> None:
    """A prompt near the 200K window of a 4.5 model leaves little room: generation stops at the window."""
    filler = "word " * 199_980
    counted = keel_anthropic.messages.count_tokens(
        model="claude-haiku-4-5", messages=user(filler + "[[keel:words=40]]")
    )
    room = 200_000 - counted.input_tokens
    assert 0 < room < 40
    message = keel_anthropic.messages.create(
        model="claude-haiku-4-5", max_tokens=1000, messages=user(filler + "[[keel:words=40]]")
    )
    assert message.stop_reason == "model_context_window_exceeded"
    assert message.usage.output_tokens == room
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        keel_anthropic.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=user(filler * 2))


def test_thinking_blocks_when_requested(sdk: anthropic.Anthropic) -> None:
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": user("Think first"),
    }
    created, final, _ = create_and_stream(sdk, **params)
    assert [block.type for block in created.content] == ["thinking", "text"]
    assert created.content[0].thinking and created.content[0].signature
    assert same_message(created, final)


def test_thinking_display_omitted_by_default_on_5x(keel_anthropic: anthropic.Anthropic) -> None:
    message = keel_anthropic.messages.create(
        model="claude-opus-5", max_tokens=500, thinking={"type": "adaptive"}, messages=user("Think")
    )
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature


def test_max_tokens_inside_a_tool_call_leaves_a_partial_input(sdk: anthropic.Anthropic) -> None:
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 14,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "auto"},
        "messages": user("weather [[keel:tool=get_weather]]"),
    }
    created, final, _ = create_and_stream(sdk, **params)
    assert created.stop_reason == "max_tokens"
    assert created.content[-1].type == "tool_use"
    assert created.content[-1].input != {"city": "example city", "units": "celsius"}
    assert created.usage.output_tokens == 14
    assert final.content[-1].input == created.content[-1].input


def test_models_list_and_retrieve(sdk: anthropic.Anthropic) -> None:
    everything = [model.id for model in sdk.models.list(limit=1000)]
    assert "claude-opus-5-5" in everything and "claude-haiku-4-5-20251001" in everything
    assert len(everything) == len(set(everything))
    first_page = sdk.models.list(limit=3)
    assert [m.id for m in first_page.data] == everything[:3] and first_page.has_more
    after = sdk.models.list(limit=3, after_id=everything[2])
    assert [m.id for m in after.data] == everything[3:6]
    before = sdk.models.list(limit=2, before_id=everything[5])
    assert [m.id for m in before.data] == everything[3:5]
    assert [m.id for m in sdk.models.list()] == everything  # auto-pagination walks every page once
    opus = sdk.models.retrieve("claude-opus-5-5")
    assert opus.max_input_tokens == 1_000_000 and opus.max_tokens == 128_000
    haiku = sdk.models.retrieve("claude-haiku-4-5")
    assert haiku.id == "claude-haiku-4-5-20251001" and haiku.max_input_tokens == 200_000
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("claude-nonexistent")


async def test_async_client_create_and_stream(keel_async_anthropic: anthropic.AsyncAnthropic) -> None:
    created = await keel_async_anthropic.messages.create(model=MODEL, max_tokens=200, messages=user("Hi"))
    async with keel_async_anthropic.messages.stream(model=MODEL, max_tokens=200, messages=user("Hi")) as stream:
        chunks = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(chunks) == created.content[0].text
    assert same_message(created, final)


@pytest.mark.parametrize("form", ["interrupted-message", "assistant-then-continue", "prefill"])
def test_continuation_requests_get_exactly_the_rest(keel_anthropic: anthropic.Anthropic, form: str) -> None:
    """The emulator continues like a model asked to resume: the remainder of the original answer, no overlap."""
    model = "claude-haiku-4-5" if form == "prefill" else MODEL
    original = user("Write something long [[keel:words=30]]")
    whole = keel_anthropic.messages.create(model=model, max_tokens=500, messages=original).content[0].text
    partial = whole[: len(whole) // 2].rstrip()
    extra: list[dict[str, Any]]
    if form == "interrupted-message":
        prompt = f"Your previous response was interrupted and ended with {partial}. Continue from where you left off."
        extra = [{"role": "user", "content": prompt}]
    elif form == "assistant-then-continue":
        extra = [
            {"role": "assistant", "content": partial},
            {"role": "user", "content": "Continue from where you left off."},
        ]
    else:
        extra = [{"role": "assistant", "content": partial}]
    rest = keel_anthropic.messages.create(model=model, max_tokens=500, messages=[*original, *extra])
    assert rest.stop_reason == "end_turn"
    assert partial + rest.content[0].text == whole
