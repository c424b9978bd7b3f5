"""The emulator's tokenizer: a token is a word or a punctuation mark, with the space before it.

Real tokenizers differ; what matters for keel is that the count is the same everywhere: `usage`,
`count_tokens`, the `max_tokens` cut-off and the context window all use this one function, and the
generated text is made of whole tokens, so a cut at N tokens falls exactly on N.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
IMAGE_TOKENS = 1_600
DOCUMENT_TOKENS = 1_600
MESSAGE_OVERHEAD = 3
REQUEST_OVERHEAD = 3


def count_text(text: str) -> int:
    return sum(1 for _ in TOKEN_RE.finditer(text))


def split_tokens(text: str) -> list[str]:
    """The text as its tokens (trailing white space is a token of its own); they join back to the text."""
    return TOKEN_RE.findall(text)


def count_json(value: Any) -> int:
    return count_text(json.dumps(value, separators=(",", ":"), sort_keys=True))


def count_block(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_text(block.get("text", ""))
    if kind == "thinking":
        return count_text(block.get("thinking", ""))
    if kind == "tool_use":
        return count_text(block.get("name", "")) + count_json(block.get("input", {}))
    if kind == "tool_result":
        return count_content(block.get("content") or "")
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        return DOCUMENT_TOKENS
    return count_json(block)


def count_content(content: str | Iterable[dict[str, Any]]) -> int:
    if isinstance(content, str):
        return count_text(content)
    return sum(count_block(block) for block in content)


class PromptBlock(NamedTuple):
    """One block of a prompt, in the order prompt caching reads them (tools, system, messages)."""

    loc: str  # where it is in the request: `tools.0`, `system.1`, `messages.2.content.0` (`messages.2.content` for a
    # string content, `system` for a string system prompt)
    block: Any  # the tool or content block (a string for string content)
    tokens: int  # its tokens; a message's overhead is counted with its first block


def prompt_blocks(body: dict[str, Any]) -> Iterator[PromptBlock]:
    """The blocks of a (validated) request's prompt: tools, then system, then messages, as the cache orders them."""
    for index, tool in enumerate(body.get("tools") or ()):
        yield PromptBlock(f"tools.{index}", tool, count_json(tool))
    system = body.get("system")
    if isinstance(system, str):
        if system:
            yield PromptBlock("system", system, count_text(system))
    elif system:
        for index, block in enumerate(system):
            yield PromptBlock(f"system.{index}", block, count_block(block))
    for index, message in enumerate(body["messages"]):
        content = message["content"]
        if isinstance(content, str):
            yield PromptBlock(f"messages.{index}.content", content, MESSAGE_OVERHEAD + count_text(content))
            continue
        overhead = MESSAGE_OVERHEAD
        for position, block in enumerate(content):
            yield PromptBlock(f"messages.{index}.content.{position}", block, overhead + count_block(block))
            overhead = 0


def count_input(blocks: Iterable[PromptBlock]) -> int:
    """Input tokens of a (validated) Messages or count_tokens request, from its prompt's blocks."""
    return REQUEST_OVERHEAD + sum(block.tokens for block in blocks)
