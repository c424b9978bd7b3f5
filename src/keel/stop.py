"""stop_reason → an outcome the caller can match on.

    match reply.outcome:
        case EndTurn(empty=True): ...           # an empty end_turn: don't retry it unchanged
        case MaxTokens(incomplete_tool_call=True): ...  # raise max_tokens and retry
        case ToolUse(calls=calls): ...
        case Refusal(category="cyber"): ...     # surface it; never blind-retry
        case UnknownStop(stop_reason=value): ...  # a value newer than this keel: passed through

Continuation helpers build the next request for a truncated answer (`continuation_messages`) and for
a paused server-tool turn (`resume_messages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from anthropic.types import Message, ToolUseBlock

CONTINUE_PROMPT = "Continue from where you left off."
MIN_OVERLAP = 20  # shorter repeats are too likely to be legitimate text


@dataclass(frozen=True)
class Outcome:
    """Base of every outcome. `final`: nothing more will come for this turn without a new request."""

    stop_reason: str | None
    text: str

    kind = "outcome"
    final = True


@dataclass(frozen=True)
class EndTurn(Outcome):
    empty: bool = False
    kind = "end_turn"


@dataclass(frozen=True)
class MaxTokens(Outcome):
    incomplete_tool_call: bool = False
    kind = "max_tokens"
    final = False


@dataclass(frozen=True)
class StopSequence(Outcome):
    sequence: str | None = None
    kind = "stop_sequence"


@dataclass(frozen=True)
class ToolUse(Outcome):
    calls: tuple[ToolUseBlock, ...] = ()
    kind = "tool_use"
    final = False


@dataclass(frozen=True)
class PauseTurn(Outcome):
    kind = "pause_turn"
    final = False


@dataclass(frozen=True)
class Refusal(Outcome):
    category: str | None = None
    explanation: str | None = None
    kind = "refusal"


@dataclass(frozen=True)
class ContextWindowExceeded(Outcome):
    """The context window is full: treat as truncated; a continuation needs a shorter conversation."""

    kind = "model_context_window_exceeded"
    final = False


@dataclass(frozen=True)
class Interrupted(Outcome):
    """No stop_reason: the stream ended without `message_stop` (a dropped connection)."""

    kind = "interrupted"
    final = False


@dataclass(frozen=True)
class UnknownStop(Outcome):
    """A stop_reason newer than this keel: passed through, never a crash."""

    kind = "unknown"


def text_of(message: Message) -> str:
    return "".join([block.text for block in message.content if block.type == "text"])


def outcome_of(message: Message) -> Outcome:
    reason: str | None = message.stop_reason
    text = text_of(message)
    if reason == "end_turn":
        return EndTurn(reason, text, empty=not message.content)
    if reason == "max_tokens":
        last = message.content[-1] if message.content else None
        return MaxTokens(reason, text, incomplete_tool_call=last is not None and last.type == "tool_use")
    if reason == "stop_sequence":
        return StopSequence(reason, text, sequence=message.stop_sequence)
    if reason == "tool_use":
        return ToolUse(reason, text, calls=tuple(b for b in message.content if b.type == "tool_use"))
    if reason == "pause_turn":
        return PauseTurn(reason, text)
    if reason == "refusal":
        details = message.stop_details
        return Refusal(
            reason,
            text,
            category=details.category if details else None,
            explanation=details.explanation if details else None,
        )
    if reason == "model_context_window_exceeded":
        return ContextWindowExceeded(reason, text)
    if reason is None:
        return Interrupted(reason, text)
    return UnknownStop(reason, text)


_STOP_KINDS = frozenset(
    cls.kind for cls in (EndTurn, MaxTokens, StopSequence, ToolUse, PauseTurn, Refusal, ContextWindowExceeded)
)


def outcome_kind(stop_reason: str | None) -> str:
    """The `kind` of the outcome `outcome_of` gives a message with this stop_reason, without building it."""
    if stop_reason in _STOP_KINDS:
        return stop_reason
    return Interrupted.kind if stop_reason is None else UnknownStop.kind


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
