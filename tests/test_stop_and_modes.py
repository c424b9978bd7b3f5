"""stop_reason outcomes through keel.Client, continuation helpers, and the delivery-mode rule."""

from __future__ import annotations

import pytest
from keel_helpers import ask, keel_client

from keel import (
    Client,
    ContextWindowExceeded,
    EndTurn,
    MaxTokens,
    PauseTurn,
    Refusal,
    Refused,
    StopSequence,
    ToolUse,
    UnknownStop,
    choose_mode,
)
from keel._stop import outcome_kind
from keel.emulator import Emulator, client

MODEL = "claude-opus-5"
TOOLS = [
    {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
]


def test_every_stop_reason_maps_to_an_outcome_to_match_on(keel_emulator: Emulator) -> None:
    keel = keel_client(keel_emulator)

    def outcome(prompt: str, **extra: object) -> object:
        params = {"model": MODEL, "max_tokens": 300, "messages": ask(prompt), **extra}
        reply = keel.messages.create(**params)
        assert reply.record.outcome == reply.outcome.kind  # the record names the outcome the reply builds
        return reply.outcome

    match outcome("hi"):
        case EndTurn(empty=False, text=text):
            assert text
        case other:
            pytest.fail(f"expected EndTurn, got {other}")
    assert outcome("[[keel:empty]]") == EndTurn("end_turn", "", empty=True)
    assert isinstance(outcome("x [[keel:words=50]]", max_tokens=5), MaxTokens)
    stopped = outcome("[[keel:reply=alpha STOP beta]]", stop_sequences=["STOP"])
    assert isinstance(stopped, StopSequence) and stopped.sequence == "STOP" and stopped.text == "alpha "
    tool = outcome("find [[keel:tool=lookup]]", tools=TOOLS)
    assert isinstance(tool, ToolUse) and [call.name for call in tool.calls] == ["lookup"] and not tool.final
    assert isinstance(outcome("[[keel:pause]]"), PauseTurn)
    refusal = outcome("[[keel:refuse=bio]]")
    assert isinstance(refusal, Refusal) and refusal.category == "bio" and refusal.explanation
    assert isinstance(outcome("[[keel:context-full]]"), ContextWindowExceeded)
    assert outcome_kind(None) == "interrupted" and outcome_kind("something_new") == "unknown"


def test_unknown_future_stop_reason_passes_through(keel_emulator: Emulator) -> None:
    """The default SDK (no strict validation) lets a new value through; keel neither crashes nor guesses."""
    reply = Client(client(keel_emulator)).messages.create(
        model=MODEL, max_tokens=100, messages=ask("x [[keel:stop=compaction_needed]]")
    )
    assert reply.outcome == UnknownStop("compaction_needed", reply.text)
    assert reply.record.stop_reason == "compaction_needed" and reply.record.outcome == "unknown"


@pytest.mark.parametrize("model", [MODEL, "claude-haiku-4-5"])
def test_max_tokens_continuation_is_stitched(keel_emulator: Emulator, model: str) -> None:
    keel = keel_client(keel_emulator)
    prompt = ask("long [[keel:words=30]]")
    whole = keel.messages.create(model=model, max_tokens=500, messages=prompt)
    reply = keel.messages.create(model=model, max_tokens=8, messages=prompt, continue_max_tokens=5)
    assert reply.text == whole.text and isinstance(reply.outcome, EndTurn)
    assert reply.record.rounds == 4  # 8 + 8 + 8 + 6 tokens
    assert reply.message.usage.output_tokens == whole.message.usage.output_tokens
    assert len(reply.message.content) == 1


def test_continuation_stops_after_n_rounds(keel_emulator: Emulator) -> None:
    reply = keel_client(keel_emulator).messages.create(
        model=MODEL, max_tokens=5, messages=ask("long [[keel:words=30]]"), continue_max_tokens=2
    )
    assert isinstance(reply.outcome, MaxTokens) and reply.record.rounds == 3
    assert len(reply.text.split()) == 15


def test_truncated_tool_call_is_not_continued(keel_emulator: Emulator) -> None:
    reply = keel_client(keel_emulator).messages.create(
        model=MODEL,
        max_tokens=11,
        messages=ask("find [[keel:tool=lookup]]"),
        tools=TOOLS,
        continue_max_tokens=3,
    )
    assert isinstance(reply.outcome, MaxTokens) and reply.outcome.incomplete_tool_call
    assert reply.record.rounds == 1  # raise max_tokens and retry instead: a continuation cannot finish a tool call


def test_pause_turn_is_resumed_when_asked(keel_emulator: Emulator) -> None:
    keel = keel_client(keel_emulator)
    paused = keel.messages.create(model=MODEL, max_tokens=300, messages=ask("research [[keel:pause]]"))
    assert isinstance(paused.outcome, PauseTurn)
    done = keel.messages.create(
        model=MODEL, max_tokens=300, messages=ask("research [[keel:pause]]"), resume_pause_turn=2
    )
    assert isinstance(done.outcome, EndTurn) and done.record.rounds == 2
    assert [block.type for block in done.message.content] == ["text", "server_tool_use", "text"]
    assert done.message.content[0].text == paused.message.content[0].text


def test_refusal_can_raise_and_is_never_retried(keel_emulator: Emulator) -> None:
    keel = keel_client(keel_emulator, policy="background")
    with pytest.raises(Refused) as caught:
        keel.messages.create(model=MODEL, max_tokens=300, messages=ask("[[keel:refuse=cyber]]"), raise_on_refusal=True)
    assert caught.value.category == "cyber" and caught.value.explanation
    assert caught.value.request_id == keel_emulator.access_log.entries()[-1].request_id
    assert len(keel_emulator.access_log.entries()) == 1
    assert caught.value.reply.record.outcome == "refusal"


def test_mode_choices_of_the_lesson() -> None:
    chat = choose_mode(watching=True, max_tokens=2_000)
    nightly = choose_mode(waiting=False, requests=10_000)
    classify = choose_mode(waiting=True, max_tokens=10)
    assert (chat.mode, nightly.mode, classify.mode) == ("stream", "batch", "standard")
    assert "50%" in nightly.reason and "watching" in chat.reason
    assert choose_mode(waiting=True, max_tokens=64_000).mode == "stream"
    assert choose_mode(waiting=True, expected_seconds=900).mode == "stream"
    assert choose_mode(waiting=False, requests=10_000, can_wait_seconds=60).mode == "standard"
    assert choose_mode(waiting=False, requests=1).mode == "standard"
    assert choose_mode(waiting=False, requests=500, max_tokens=64_000).mode == "batch"
