"""Continuing an answer: a truncated one (max_tokens), a paused server-tool turn, a stream broken mid-answer.

One module for both `messages.create` and streams: the request that continues an answer, the stitching of
the continuation onto what was already produced (no duplicate, no gap), and the rounds of one call made into
one message with their usage summed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from anthropic.types import Message
from anthropic.types import Usage as SdkUsage

from ._stop import MaxTokens, PauseTurn, outcome_of, text_of

CONTINUE_PROMPT = "Continue from where you left off."
MIN_OVERLAP = 20  # shorter repeats are too likely to be legitimate text
STITCH_HOLD = 200  # characters of a resumed stream round held back until the overlap with what was seen is known

_PREFILL_MODEL = re.compile(r"claude-(?:3|(?:opus|sonnet|haiku)-4(?:-[015])?(?:-\d{8})?$|(?:opus|sonnet|haiku)-4-5)")


def supports_prefill(model: str) -> bool:
    """Whether a model continues from an assistant prefill (4.5 and older) rather than a user message."""
    return bool(_PREFILL_MODEL.match(model))


def interrupted_prompt(partial: str) -> str:
    """The docs' user message for resuming an interrupted answer on 4.6+ models."""
    return f"Your previous response was interrupted and ended with {partial}. {CONTINUE_PROMPT}"


def continuation_messages(messages: list[Any], model: str, partial: str) -> list[Any]:
    """The conversation that asks the model to carry on after `partial` (text it already produced).

    4.5 and older: the partial text as an assistant prefill (without trailing white space, which the API
    rejects). 4.6 and later, where prefill is a 400: a user message quoting where the answer ended.
    """
    if supports_prefill(model):
        return [*messages, {"role": "assistant", "content": partial.rstrip()}]
    return [*messages, {"role": "user", "content": interrupted_prompt(partial)}]


def resume_messages(messages: list[Any], paused: Message) -> list[Any]:
    """For pause_turn: the paused response goes back as-is as the assistant turn, and the model continues."""
    return [*messages, {"role": "assistant", "content": [block.to_dict() for block in paused.content]}]


def stitch(seen: str, continuation: str, sent_prefix: str | None = None) -> str:
    """The part of `continuation` the caller has not seen yet: no duplicate, no gap.

    `sent_prefix` is what the continuation request quoted as already written (a prefill drops trailing
    white space the caller has already seen). A model that repeats the end of the partial text is
    trimmed: the longest overlap of at least 20 characters between the end of `seen` and the start of the
    continuation is dropped.
    """
    whole = (sent_prefix if sent_prefix is not None else seen) + continuation
    rest = whole[len(seen) :] if whole.startswith(seen) else continuation
    for size in range(min(len(seen), len(rest)), MIN_OVERLAP - 1, -1):
        if seen.endswith(rest[:size]):
            return rest[size:]
    return rest


class Stitcher:
    """Removes from a resumed stream round's text what the caller has already seen, as the text arrives."""

    def __init__(self, seen: str, sent_prefix: str | None) -> None:
        self.seen = seen
        self.sent_prefix = sent_prefix
        self.buffer = ""
        self.resolved = False

    def feed(self, text: str) -> str:
        if self.resolved:
            return text
        self.buffer += text
        return self.flush() if len(self.buffer) >= STITCH_HOLD else ""

    def flush(self) -> str:
        if self.resolved:
            return ""
        self.resolved = True
        return stitch(self.seen, self.buffer, self.sent_prefix)


def sum_usage(messages: Sequence[Message]) -> SdkUsage:
    """The usage of several rounds of one call, as one SDK usage (the first round's, with the counts summed)."""
    first = messages[0].usage
    if len(messages) == 1:
        return first
    return first.model_copy(
        update={
            "input_tokens": sum(m.usage.input_tokens for m in messages),
            "output_tokens": sum(m.usage.output_tokens for m in messages),
            "cache_creation_input_tokens": sum(m.usage.cache_creation_input_tokens or 0 for m in messages),
            "cache_read_input_tokens": sum(m.usage.cache_read_input_tokens or 0 for m in messages),
        }
    )


def merge_continuation(done: Message, more: Message, sent_prefix: str | None) -> list[Any]:
    """Content of a truncated answer followed by its continuation, the text stitched into one block."""
    content = list(done.content)
    new = list(more.content)
    if content and new and content[-1].type == "text" and new[0].type == "text":
        extra = stitch(text_of(done), new[0].text, sent_prefix)
        content[-1] = content[-1].model_copy(update={"text": content[-1].text + extra})
        new = new[1:]
    return content + new


def combine(rounds: Sequence[Message]) -> Message:
    """The rounds of one `create` call as one message: continuations stitched, resumed pauses appended."""
    if len(rounds) == 1:
        return rounds[0]
    prefill = supports_prefill(rounds[0].model)
    so_far = rounds[0]
    for current in rounds[1:]:
        if so_far.stop_reason == "pause_turn":
            content = list(so_far.content) + list(current.content)
        else:
            content = merge_continuation(so_far, current, text_of(so_far).rstrip() if prefill else None)
        so_far = current.model_copy(update={"content": content})
    return so_far.model_copy(update={"usage": sum_usage(rounds)})


def next_request(
    params: Mapping[str, Any], rounds: Sequence[Message], continue_max_tokens: int, resume_pause_turn: int
) -> dict[str, Any] | None:
    """The request that continues the answer so far, if the caller asked for continuations and one is due."""
    if not (continue_max_tokens or resume_pause_turn):
        return None
    done = combine(rounds)
    outcome = outcome_of(done)
    continuations = len(rounds) - 1
    if isinstance(outcome, MaxTokens) and not outcome.incomplete_tool_call and continuations < continue_max_tokens:
        return {**params, "messages": continuation_messages(params["messages"], params["model"], outcome.text)}
    if isinstance(outcome, PauseTurn) and continuations < resume_pause_turn:
        return {**params, "messages": resume_messages(params["messages"], done)}
    return None


def without_unfinished_blocks(snapshot: Message | None) -> Message | None:
    """A partial message minus a trailing tool_use/thinking block that was cut off (never resumed partially)."""
    if snapshot is None:
        return None
    content = list(snapshot.content)
    while content and content[-1].type != "text":
        content.pop()
    return snapshot.model_copy(update={"content": content})


def combine_stream(parts: Sequence[Message], text_seen: str) -> Message:
    """The rounds of one resumed stream as one message: its text block holds exactly the stitched text the
    caller saw; the other blocks of every round follow."""
    if len(parts) == 1:
        return parts[0]
    first = list(parts[0].content)
    at = next((i for i, block in enumerate(first) if block.type == "text"), len(first))
    before = first[:at]
    # the first text block of any round (a first round cut off before its text has none) carries the text seen
    block = next((block for part in parts for block in part.content if block.type == "text"), None)
    text = [] if block is None else [block.model_copy(update={"text": text_seen})]
    after = [block for part in parts for block in part.content if block.type != "text"][len(before) :]
    return parts[-1].model_copy(update={"content": before + text + after, "usage": sum_usage(parts)})
