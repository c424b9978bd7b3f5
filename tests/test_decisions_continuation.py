"""Continuing an answer: the request that continues it, and stitching the rest on with no duplicate and no gap.

Expected values come from the documented rules (`keel._continuation`): a prefill (4.5 and older) carries the
partial text without trailing white space, which the caller has already seen; 4.6 and later get the docs' user
message; a model that repeats at least 20 characters of the end of what was seen has the repeat dropped; a
resumed stream holds back 200 characters until that overlap is known; the usage of the rounds is summed.
"""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import ServerToolUseBlock
from decision_helpers import message, text, thinking, tool_use, usage
from keel_helpers import SIDES, Side, ask, stream_on

from keel._continuation import (
    Stitcher,
    combine,
    combine_stream,
    continuation_messages,
    merge_continuation,
    next_request,
    resume_messages,
    stitch,
    sum_usage,
    supports_prefill,
    without_unfinished_blocks,
)
from keel.emulator import Emulator

PREFILL_MODEL = "claude-haiku-4-5"  # 4.5: continues from an assistant prefill
USER_MESSAGE_MODEL = "claude-opus-5"  # 4.6 and later: a prefill is a 400
SEEN = "The fox ran through the forest until it reached the river bank."


# --- which models take a prefill ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["claude-3-haiku-20240307", "claude-3-5-sonnet-20241022", "claude-opus-4", "claude-opus-4-0", "claude-opus-4-1",
     "claude-sonnet-4-20250514", "claude-sonnet-4-5", "claude-haiku-4-5-20251001", "claude-opus-4-5-20251101"],
)  # fmt: skip
def test_models_up_to_4_5_continue_from_a_prefill(model: str) -> None:
    assert supports_prefill(model)


@pytest.mark.parametrize(
    "model", ["claude-opus-4-6", "claude-sonnet-4-6", "claude-opus-4-8", "claude-opus-5", "claude-haiku-5-5"]
)
def test_models_from_4_6_on_take_no_prefill(model: str) -> None:
    assert not supports_prefill(model)


# --- the request that continues -------------------------------------------------------------------------------


def test_a_prefill_carries_the_partial_text_without_trailing_white_space() -> None:
    asked = ask("Tell me a story")
    continued = continuation_messages(asked, PREFILL_MODEL, "  Once upon a time \n")
    assert continued == [*asked, {"role": "assistant", "content": "  Once upon a time"}]
    assert asked == ask("Tell me a story")  # the caller's list is left as it was


def test_a_model_without_prefill_gets_the_docs_user_message_quoting_the_partial_text() -> None:
    continued = continuation_messages(ask("Tell me a story"), USER_MESSAGE_MODEL, "Once upon a time ")
    assert continued[-1] == {
        "role": "user",
        "content": "Your previous response was interrupted and ended with Once upon a time . "
        "Continue from where you left off.",
    }


def test_a_paused_turn_goes_back_as_it_is_as_the_assistant_turn() -> None:
    paused = message(text("Searching."), tool_use("web_search", q="x"), stop_reason="pause_turn")
    resumed = resume_messages(ask("research"), paused)
    assert resumed[-1] == {"role": "assistant", "content": [block.to_dict() for block in paused.content]}
    assert resumed[:-1] == ask("research")


# --- stitch -----------------------------------------------------------------------------------------------------


def test_a_continuation_without_repeat_is_appended_as_it_is() -> None:
    assert stitch(SEEN, " The water was cold.") == " The water was cold."


def test_a_repeat_of_the_end_of_the_seen_text_is_dropped() -> None:
    repeat = SEEN[-41:]  # "until it reached the river bank." and more: an odd length
    assert stitch(SEEN, repeat + " The water was cold.") == " The water was cold."


@pytest.mark.parametrize(("size", "trimmed"), [(19, False), (20, True), (21, True)])
def test_a_repeat_is_dropped_only_from_20_characters_on(size: int, trimmed: bool) -> None:
    repeat = SEEN[-size:]
    expected = " Then it swam." if trimmed else repeat + " Then it swam."
    assert stitch(SEEN, repeat + " Then it swam.") == expected


def test_the_longest_repeat_is_dropped() -> None:
    seen = "ha ha ha ha ha ha ha ha ha ha ha ha ha ha ha"  # 44 characters of "ha " repeated
    assert stitch(seen, seen + " laughed the fox.") == " laughed the fox."


def test_a_repeat_longer_than_the_continuation_is_the_whole_continuation() -> None:
    assert stitch(SEEN, SEEN[-30:]) == ""


def test_a_prefill_without_the_trailing_space_already_seen_gives_no_double_space() -> None:
    seen = "Once upon a time "
    assert stitch(seen, " there was a fox.", sent_prefix=seen.rstrip()) == "there was a fox."


def test_a_continuation_that_does_not_extend_the_seen_text_is_kept_whole() -> None:
    seen = "Once upon a time "
    assert stitch(seen, "\nThere was a fox.", sent_prefix=seen.rstrip()) == "\nThere was a fox."


def test_a_prefill_continuation_that_also_repeats_text_is_trimmed_once() -> None:
    seen = SEEN + " "
    # the prefill's missing space comes back, then the model repeats the end and the space after it
    assert stitch(seen, " " + SEEN[-25:] + " Then", sent_prefix=seen.rstrip()) == "Then"


# --- Stitcher: the same, as a resumed stream's text arrives ---------------------------------------------------


def _feed(stitcher: Stitcher, pieces: list[str]) -> list[str]:
    return [stitcher.feed(piece) for piece in pieces]


def test_a_resumed_stream_holds_back_200_characters_then_stitches_them() -> None:
    stitcher = Stitcher(SEEN, None)
    repeat = SEEN[-30:]
    fresh = "x" * (200 - len(repeat) - 1)
    assert _feed(stitcher, [repeat, fresh]) == ["", ""]  # 199 characters held
    assert stitcher.feed("y") == fresh + "y"  # the 200th: the repeat is dropped, the rest let through
    assert stitcher.feed(" more") == " more"  # from then on text passes as it comes
    assert stitcher.flush() == ""


def test_a_resumed_stream_that_ends_early_flushes_what_it_held() -> None:
    stitcher = Stitcher(SEEN, None)
    assert stitcher.feed(SEEN[-25:]) == ""
    assert stitcher.feed(" The end.") == ""
    assert stitcher.flush() == " The end."
    assert stitcher.flush() == ""  # only once
    assert stitcher.feed(" Later.") == " Later."


def test_a_resumed_stream_after_a_prefill_drops_the_white_space_already_seen() -> None:
    seen = "Once upon a time "
    stitcher = Stitcher(seen, seen.rstrip())
    assert stitcher.feed(" there was a fox.") == ""
    assert stitcher.flush() == "there was a fox."


# --- merging a truncated answer with its continuation ---------------------------------------------------------


def test_the_continuations_first_text_joins_the_last_text_block_and_its_other_blocks_follow() -> None:
    done = message(thinking("plan"), text(SEEN), stop_reason="max_tokens")
    call = tool_use("lookup", q="river")
    more = message(text(SEEN[-22:] + " It drank."), call, stop_reason="tool_use")
    assert merge_continuation(done, more, None) == [thinking("plan"), text(SEEN + " It drank."), call]


def test_blocks_that_are_not_text_on_either_side_are_not_joined() -> None:
    call = tool_use("lookup")
    done = message(text("Looking it up."), call, stop_reason="max_tokens")
    assert merge_continuation(done, message(text("Found.")), None) == [text("Looking it up."), call, text("Found.")]
    assert merge_continuation(message(text("Intro.")), message(call), None) == [text("Intro."), call]


def test_an_empty_side_is_not_joined() -> None:
    assert merge_continuation(message(stop_reason="max_tokens"), message(text("All.")), None) == [text("All.")]
    assert merge_continuation(message(text("All.")), message(), None) == [text("All.")]


def test_the_merge_uses_the_prefill_that_was_sent() -> None:
    done = message(text("Once upon a time "), stop_reason="max_tokens")
    merged = merge_continuation(done, message(text(" there was a fox.")), "Once upon a time")
    assert merged == [text("Once upon a time there was a fox.")]


# --- combining the rounds of one call -------------------------------------------------------------------------


def _rounds(model: str, first: str, second: str) -> list[Any]:
    return [
        message(text(first), stop_reason="max_tokens", model=model, tokens=usage(10, 8)),
        message(text(second), stop_reason="end_turn", model=model, tokens=usage(20, 5), id="msg_2"),
    ]


def test_a_single_round_is_the_message_itself() -> None:
    only = message(text("Hi"))
    assert combine([only]) is only


def test_rounds_of_a_prefill_model_are_stitched_on_the_prefill_that_was_sent() -> None:
    combined = combine(_rounds(PREFILL_MODEL, "  Once upon a time ", " there was a fox."))
    assert combined.content == [text("  Once upon a time there was a fox.")]
    assert (combined.stop_reason, combined.id) == ("end_turn", "msg_2")  # the last round's
    assert (combined.usage.input_tokens, combined.usage.output_tokens) == (30, 13)


def test_rounds_of_a_model_without_prefill_keep_the_continuation_as_the_model_wrote_it() -> None:
    combined = combine(_rounds(USER_MESSAGE_MODEL, "Once upon a time ", " there was a fox."))
    assert combined.content == [text("Once upon a time  there was a fox.")]


def test_resumed_pauses_are_appended_not_stitched() -> None:
    paused = message(text("Searching. "), stop_reason="pause_turn", model=PREFILL_MODEL)
    done = message(text(" Found it."), stop_reason="end_turn", model=PREFILL_MODEL)
    assert combine([paused, done]).content == [text("Searching. "), text(" Found it.")]


def test_the_rounds_usage_is_summed_on_the_first_rounds_usage() -> None:
    first = usage(10, 5, cache_write=None, cache_read=2).model_copy(update={"service_tier": "priority"})
    second = usage(20, 7, cache_write=4, cache_read=3).model_copy(update={"service_tier": "standard"})
    third = usage(1, 1, cache_write=None, cache_read=None)
    total = sum_usage([message(tokens=first), message(tokens=second), message(tokens=third)])
    assert (total.input_tokens, total.output_tokens) == (31, 13)
    assert (total.cache_creation_input_tokens, total.cache_read_input_tokens) == (4, 5)
    assert total.service_tier == "priority"
    assert sum_usage([message(tokens=first)]) is first


# --- the next request of a call -------------------------------------------------------------------------------

PARAMS = {"model": USER_MESSAGE_MODEL, "max_tokens": 5, "messages": ask("Tell me a story")}


def test_no_continuation_unless_asked() -> None:
    assert next_request(PARAMS, [message(text("Once"), stop_reason="max_tokens")], 0, 0) is None
    assert next_request(PARAMS, [message(text("Searching"), stop_reason="pause_turn")], 0, 0) is None


def test_a_truncated_answer_is_continued_up_to_the_number_asked() -> None:
    rounds = [message(text("Once upon"), stop_reason="max_tokens"), message(text(" a"), stop_reason="max_tokens")]
    continued = continuation_messages(PARAMS["messages"], PARAMS["model"], "Once upon a")
    assert next_request(PARAMS, rounds, continue_max_tokens=2, resume_pause_turn=0) == {**PARAMS, "messages": continued}
    assert next_request(PARAMS, rounds, continue_max_tokens=1, resume_pause_turn=5) is None  # its one is made


def test_a_paused_turn_is_resumed_up_to_the_number_asked() -> None:
    search = ServerToolUseBlock(type="server_tool_use", id="srvtoolu_1", name="web_search", input={"q": "x"})
    rounds = [message(text("Searching."), stop_reason="pause_turn"), message(search, stop_reason="pause_turn")]
    resumed = resume_messages(PARAMS["messages"], combine(rounds))
    assert next_request(PARAMS, rounds, continue_max_tokens=0, resume_pause_turn=2) == {**PARAMS, "messages": resumed}
    assert next_request(PARAMS, rounds, continue_max_tokens=5, resume_pause_turn=1) is None  # its one is made


def test_a_truncated_tool_call_and_a_finished_answer_are_not_continued() -> None:
    cut = [message(text("Looking"), tool_use("lookup"), stop_reason="max_tokens")]
    assert next_request(PARAMS, cut, continue_max_tokens=3, resume_pause_turn=3) is None
    assert next_request(PARAMS, [message(text("Done."))], continue_max_tokens=3, resume_pause_turn=3) is None


# --- a resumed stream ------------------------------------------------------------------------------------------


def test_no_snapshot_leaves_nothing_to_resume() -> None:
    assert without_unfinished_blocks(None) is None


@pytest.mark.parametrize(
    ("blocks", "kept"),
    [
        ([text("Let me look"), tool_use("lookup")], 1),  # a cut-off tool call
        ([text("Hmm"), thinking("half a thought"), tool_use("lookup")], 1),
        ([thinking("plan"), text("Partial answ")], 2),  # text last: kept whole
        ([text("a"), tool_use("lookup"), text("b")], 3),
        ([tool_use("lookup")], 0),
        ([], 0),
    ],
)
def test_a_partial_message_loses_its_trailing_blocks_that_are_not_text(blocks: list[Any], kept: int) -> None:
    snapshot = message(*blocks, stop_reason=None)
    partial = without_unfinished_blocks(snapshot)
    assert partial is not None and partial.content == blocks[:kept]
    assert partial.id == snapshot.id and snapshot.content == blocks  # a copy: the snapshot is left as it was


def test_a_single_stream_part_is_the_message_itself() -> None:
    only = message(text("Hi"))
    assert combine_stream([only], "Hi") is only


def test_a_resumed_streams_text_block_holds_exactly_what_the_caller_saw_and_other_blocks_follow() -> None:
    call = tool_use("lookup", q="river")
    first = message(thinking("plan"), text("The fox ran"), stop_reason=None, tokens=usage(10, 4))
    second = message(
        thinking("more"), text(" to the river."), call, stop_reason="tool_use", tokens=usage(12, 6), id="msg_2"
    )
    combined = combine_stream([first, second], "The fox ran to the river.")
    assert combined.content == [thinking("plan"), text("The fox ran to the river."), thinking("more"), call]
    assert (combined.stop_reason, combined.id) == ("tool_use", "msg_2")
    assert (combined.usage.input_tokens, combined.usage.output_tokens) == (22, 10)


def test_a_stream_resumed_twice_ends_as_its_last_part_with_every_parts_usage() -> None:
    parts = [
        message(text("One"), stop_reason=None, tokens=usage(1, 1), id="msg_1"),
        message(text(" two"), stop_reason=None, tokens=usage(2, 2), id="msg_2"),
        message(text(" three."), stop_reason="end_turn", tokens=usage(3, 3), id="msg_3"),
    ]
    combined = combine_stream(parts, "One two three.")
    assert (combined.id, combined.stop_reason, combined.content) == ("msg_3", "end_turn", [text("One two three.")])
    assert (combined.usage.input_tokens, combined.usage.output_tokens) == (6, 6)


def test_a_resumed_stream_whose_first_part_had_no_text_still_holds_the_text_seen() -> None:
    call = tool_use("lookup", id="toolu_a")
    first = message(call, stop_reason=None)  # a finished tool call, the stream cut before any text
    second = message(thinking("more"), text("Answer."), tool_use("fetch", id="toolu_b"), stop_reason="tool_use")
    combined = combine_stream([first, second], "Answer.")
    assert combined.content == [call, text("Answer."), thinking("more"), tool_use("fetch", id="toolu_b")]
    assert combine_stream([first, message(thinking("x"))], "").content == [call, thinking("x")]  # no text at all


@pytest.mark.parametrize("side", SIDES)
def test_a_stream_cut_anywhere_in_its_thinking_or_text_ends_with_the_text_the_caller_read(side: Side) -> None:
    for events in range(3, 9):  # the cut falls in the thinking block, between the blocks, then in the text
        emulator = Emulator()
        emulator.inject(f"stream_error_after={events}", limit=1)
        got = stream_on(side, emulator, model=USER_MESSAGE_MODEL, max_tokens=300, on_interrupt="continue",
                        messages=ask("go [[keel:think]] [[keel:words=8]]"))  # fmt: skip
        assert got.final is not None and got.error is None
        assert [block.text for block in got.final.content if block.type == "text"] == ["".join(got.pieces)], events
