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


@dataclass(frozen=True)
class StopRow:
    """One row of the stop table: what an outcome kind means and what to do about it (`keel explain` shows it).

    Attributes:
        outcome: the outcome class.
        meaning: what happened.
        retry: whether to send the same request again, and when.
        todo: what to do instead (or next).
    """

    outcome: type[Outcome]
    meaning: str
    retry: str
    todo: str

    @property
    def kind(self) -> str:
        return self.outcome.kind


STOP_TABLE: tuple[StopRow, ...] = (
    StopRow(
        EndTurn,
        "The model finished its turn.",
        "no",
        "Use the answer. An empty end_turn (after tool results): add a user turn rather than retrying it unchanged.",
    ),
    StopRow(
        MaxTokens,
        "The answer was cut at max_tokens.",
        "not unchanged",
        "Continue it (send the partial answer back as the assistant turn) or raise max_tokens; cut inside a "
        "tool_use block, raise max_tokens and retry.",
    ),
    StopRow(
        StopSequence,
        "One of the request's stop_sequences matched (stop_sequence says which).",
        "no",
        "Use the text up to the sequence.",
    ),
    StopRow(
        ToolUse,
        "The model calls tools.",
        "no",
        "Run the tools and answer with tool_result blocks in the next user turn.",
    ),
    StopRow(
        PauseTurn,
        "A server-tool loop paused a long turn.",
        "no, continue it",
        "Send the response back as the assistant turn to let it continue.",
    ),
    StopRow(
        Refusal,
        "The model declined (stop_details.category says why, when given).",
        "never blindly",
        "Surface it to the user; rephrase or route the request elsewhere.",
    ),
    StopRow(
        ContextWindowExceeded,
        "The context window is full: the answer is truncated.",
        "not unchanged",
        "Shorten the conversation (drop or summarise turns), then continue.",
    ),
    StopRow(
        Interrupted,
        "No stop_reason: the stream ended without message_stop (a dropped connection).",
        "yes",
        "Send the request again, or keep the partial text; the call record has the request_id.",
    ),
    StopRow(
        UnknownStop,
        "A stop_reason newer than this keel: passed through as it came.",
        "unknown",
        "Read the API's release notes for it, and upgrade keel.",
    ),
)
"""One row per outcome kind; `outcome_kind` and `keel explain` read it."""

_STOP_KINDS = frozenset(row.kind for row in STOP_TABLE if row.outcome not in (Interrupted, UnknownStop))


def stop_row(kind: str) -> StopRow | None:
    """The stop table's row for an outcome kind (a stop_reason, "interrupted" or "unknown"); None for no such kind."""
    return next((row for row in STOP_TABLE if row.kind == kind), None)


def outcome_kind(stop_reason: str | None) -> str:
    """The `kind` of the outcome `outcome_of` gives a message with this stop_reason, without building it."""
    if stop_reason in _STOP_KINDS:
        return stop_reason
    return Interrupted.kind if stop_reason is None else UnknownStop.kind
