"""stop_reason → an outcome the caller can match on.

    match reply.outcome:
        case EndTurn(empty=True): ...           # an empty end_turn: don't retry it unchanged
        case MaxTokens(incomplete_tool_call=True): ...  # raise max_tokens and retry
        case ToolUse(calls=calls): ...
        case Refusal(category="cyber"): ...     # surface it; never blind-retry
        case UnknownStop(stop_reason=value): ...  # a value newer than this keel: passed through

Continuing a truncated answer or a paused turn is `keel._continuation`'s part.
"""

from __future__ import annotations

from dataclasses import dataclass

from anthropic.types import Message, ToolUseBlock


@dataclass(frozen=True)
class Outcome:
    """Base of every outcome.

    Attributes:
        stop_reason: the response's stop_reason, as the API gave it.
        text: the text of the response's text blocks, joined.
        kind: the outcome's name in call records ("end_turn", ..., "interrupted", "unknown").
        final: False when the turn is not over: more comes only with a new request (tools to run, a pause
            to resume, a truncated answer to continue).
    """

    stop_reason: str | None
    text: str

    kind = "outcome"
    final = True


@dataclass(frozen=True)
class EndTurn(Outcome):
    """The model finished its turn.

    Attributes:
        empty: no content at all (as after tool results): do not retry it unchanged.
    """

    empty: bool = False
    kind = "end_turn"


@dataclass(frozen=True)
class MaxTokens(Outcome):
    """Truncated at max_tokens.

    Attributes:
        incomplete_tool_call: the answer ends inside a tool_use block, which a continuation cannot finish:
            raise max_tokens and retry.
    """

    incomplete_tool_call: bool = False
    kind = "max_tokens"
    final = False


@dataclass(frozen=True)
class StopSequence(Outcome):
    """A stop sequence ended the answer.

    Attributes:
        sequence: the stop sequence that matched.
    """

    sequence: str | None = None
    kind = "stop_sequence"


@dataclass(frozen=True)
class ToolUse(Outcome):
    """The model calls tools.

    Attributes:
        calls: the response's tool_use blocks, to answer with tool_result blocks.
    """

    calls: tuple[ToolUseBlock, ...] = ()
    kind = "tool_use"
    final = False


@dataclass(frozen=True)
class PauseTurn(Outcome):
    """A server-tool loop paused: send the response back as the assistant turn to let it continue."""

    kind = "pause_turn"
    final = False


@dataclass(frozen=True)
class Refusal(Outcome):
    """The model declined: surface it, never blind-retry.

    Attributes:
        category: `stop_details.category` (cyber, bio, ...; None when the API gave none).
        explanation: `stop_details.explanation` (None when the API gave none).
    """

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
