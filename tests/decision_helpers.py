"""Messages built by hand for the decision tests: exactly the content, stop_reason and usage a test needs."""

from __future__ import annotations

from typing import Any

from anthropic.types import Message, RefusalStopDetails, TextBlock, ThinkingBlock, ToolUseBlock
from anthropic.types import Usage as SdkUsage

Block = TextBlock | ToolUseBlock | ThinkingBlock


def text(value: str) -> TextBlock:
    return TextBlock(type="text", text=value)


def tool_use(name: str, id: str = "toolu_1", **input: Any) -> ToolUseBlock:
    return ToolUseBlock(type="tool_use", id=id, name=name, input=input)


def thinking(value: str) -> ThinkingBlock:
    return ThinkingBlock(type="thinking", thinking=value, signature="sig")


def usage(
    input_tokens: int = 0, output_tokens: int = 0, cache_write: int | None = None, cache_read: int | None = None
) -> SdkUsage:
    return SdkUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_creation_input_tokens=cache_write,
        cache_read_input_tokens=cache_read,
    )


def message(
    *content: Block,
    stop_reason: Any = "end_turn",
    model: str = "claude-opus-5",
    stop_sequence: str | None = None,
    stop_details: RefusalStopDetails | None = None,
    tokens: SdkUsage | None = None,
    id: str = "msg_1",
) -> Message:
    """A Message as the API returns it; `stop_reason` may be any string (a value newer than the SDK) or None."""
    return Message.model_construct(
        id=id,
        type="message",
        role="assistant",
        model=model,
        content=list(content),
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        stop_details=stop_details,
        usage=tokens or usage(10, 5),
    )
