"""stop_reason → outcome: every kind, its `final`, and the edge inputs (no stop_reason, empty answers, no details).

Expected values come from the API's stop reasons and keel's documented outcomes (README "stop_reason outcomes",
the `keel._stop` docstrings): the turn is over (`final`) unless more comes only with a new request.
"""

from __future__ import annotations

import pytest
from anthropic.types import RefusalStopDetails
from decision_helpers import message, text, thinking, tool_use

import keel
from keel import (
    ContextWindowExceeded,
    EndTurn,
    Interrupted,
    MaxTokens,
    Outcome,
    PauseTurn,
    Refusal,
    StopSequence,
    ToolUse,
    UnknownStop,
)
from keel._stop import outcome_kind

# stop_reason, the outcome type, its kind (as call records name it), whether the turn is over
KINDS: list[tuple[str | None, type[Outcome], str, bool]] = [
    ("end_turn", EndTurn, "end_turn", True),
    ("max_tokens", MaxTokens, "max_tokens", False),  # a truncated answer to continue
    ("stop_sequence", StopSequence, "stop_sequence", True),
    ("tool_use", ToolUse, "tool_use", False),  # tools to run
    ("pause_turn", PauseTurn, "pause_turn", False),  # a pause to resume
    ("refusal", Refusal, "refusal", True),  # surfaced, never continued
    ("model_context_window_exceeded", ContextWindowExceeded, "model_context_window_exceeded", False),  # truncated
    (None, Interrupted, "interrupted", False),  # a dropped stream: resume it
    ("compaction_needed", UnknownStop, "unknown", True),  # passed through, never continued
]


@pytest.mark.parametrize(("stop_reason", "kind_type", "kind", "final"), KINDS, ids=[row[2] for row in KINDS])
def test_each_stop_reason_gives_its_outcome_with_reason_text_kind_and_final(
    stop_reason: str | None, kind_type: type[Outcome], kind: str, final: bool
) -> None:
    outcome = keel.outcome_of(message(text("Hello, "), text("world."), stop_reason=stop_reason))
    assert type(outcome) is kind_type
    assert outcome.stop_reason == stop_reason
    assert outcome.text == "Hello, world."  # every text block, joined with nothing in between
    assert outcome.kind == kind
    assert outcome.final is final


@pytest.mark.parametrize(("stop_reason", "kind_type", "kind", "final"), KINDS, ids=[row[2] for row in KINDS])
def test_outcome_kind_names_the_outcome_without_building_it(
    stop_reason: str | None, kind_type: type[Outcome], kind: str, final: bool
) -> None:
    assert outcome_kind(stop_reason) == kind == kind_type.kind


def test_text_is_the_text_blocks_only_in_order() -> None:
    outcome = keel.outcome_of(
        message(thinking("hmm"), text("Let me look."), tool_use("lookup", q="x"), text(" Done"), stop_reason="tool_use")
    )
    assert outcome.text == "Let me look. Done"


def test_end_turn_without_content_is_empty_and_with_content_is_not() -> None:
    assert keel.outcome_of(message(stop_reason="end_turn")) == EndTurn("end_turn", "", empty=True)
    assert keel.outcome_of(message(text("Hi"), stop_reason="end_turn")) == EndTurn("end_turn", "Hi", empty=False)


def test_an_empty_max_tokens_answer_is_truncated_but_no_tool_call_is_incomplete() -> None:
    assert keel.outcome_of(message(stop_reason="max_tokens")) == MaxTokens("max_tokens", "", incomplete_tool_call=False)


def test_max_tokens_inside_a_tool_call_is_an_incomplete_tool_call_only_when_it_is_the_last_block() -> None:
    cut_in_tool = keel.outcome_of(message(text("Looking"), tool_use("lookup"), stop_reason="max_tokens"))
    assert isinstance(cut_in_tool, MaxTokens) and cut_in_tool.incomplete_tool_call
    cut_in_text = keel.outcome_of(message(tool_use("lookup"), text("and then"), stop_reason="max_tokens"))
    assert isinstance(cut_in_text, MaxTokens) and not cut_in_text.incomplete_tool_call


def test_stop_sequence_carries_the_sequence_that_matched() -> None:
    outcome = keel.outcome_of(message(text("alpha "), stop_reason="stop_sequence", stop_sequence="STOP"))
    assert outcome == StopSequence("stop_sequence", "alpha ", sequence="STOP")


def test_tool_use_carries_the_tool_calls_in_order_and_nothing_else() -> None:
    first, second = tool_use("lookup", id="toolu_a", q="a"), tool_use("fetch", id="toolu_b", url="u")
    outcome = keel.outcome_of(message(text("Two calls:"), first, thinking("x"), second, stop_reason="tool_use"))
    assert outcome == ToolUse("tool_use", "Two calls:", calls=(first, second))


def test_refusal_with_details_carries_category_and_explanation() -> None:
    details = RefusalStopDetails(type="refusal", category="cyber", explanation="Malware request.")
    outcome = keel.outcome_of(message(text("I can't."), stop_reason="refusal", stop_details=details))
    assert outcome == Refusal("refusal", "I can't.", category="cyber", explanation="Malware request.")


def test_a_refusal_without_stop_details_has_no_category_or_explanation() -> None:
    outcome = keel.outcome_of(message(text("I can't help with that."), stop_reason="refusal"))
    assert outcome == Refusal("refusal", "I can't help with that.", category=None, explanation=None)


def test_no_stop_reason_is_an_interrupted_stream_keeping_the_partial_text() -> None:
    assert keel.outcome_of(message(text("partial ans"), stop_reason=None)) == Interrupted(None, "partial ans")


def test_a_stop_reason_newer_than_keel_passes_through_with_its_text() -> None:
    outcome = keel.outcome_of(message(text("so far"), stop_reason="compaction_needed"))
    assert outcome == UnknownStop("compaction_needed", "so far")


def test_outcomes_built_by_hand_default_to_the_plain_case() -> None:
    """As a test of the caller's own code builds them: not empty, no incomplete tool call, no details."""
    assert EndTurn("end_turn", "Hi").empty is False
    assert MaxTokens("max_tokens", "Hi").incomplete_tool_call is False
    assert StopSequence("stop_sequence", "Hi").sequence is None
    assert ToolUse("tool_use", "").calls == ()
    assert (Refusal("refusal", "").category, Refusal("refusal", "").explanation) == (None, None)
