"""The emulator's tokenizer: a token is a word or a punctuation mark, with the space before it.

Real tokenizers differ; what matters for keel is that the count is the same everywhere: `usage`,
`count_tokens`, the `max_tokens` cut-off and the context window all use this one function, and the
generated text is made of whole tokens, so a cut at N tokens falls exactly on N.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

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


def count_input(body: dict[str, Any]) -> int:
    """Input tokens of a (validated) Messages or count_tokens request."""
    total = REQUEST_OVERHEAD
    system = body.get("system")
    if system:
        total += count_content(system)
    for message in body["messages"]:
        total += MESSAGE_OVERHEAD + count_content(message["content"])
    for tool in body.get("tools") or ():
        total += count_json(tool)
    return total
