"""A local, deliberately high estimate of a request's input tokens, for reserving before the call.

Real tokenizers put about 3.5 to 4 characters of English prose or code in a token. The estimate counts one token
per 3 ASCII characters and one per other character (CJK text is about one to one and a half characters a token),
over every string of the request, field names included (standing in for the API's per-message overhead). It
over-estimates ordinary text and tool definitions by roughly a quarter; emoji and rare scripts can still
exceed it. An image, or a document given by bytes, URL or file id, counts `MEDIA_TOKENS`: about the most one
image costs; a PDF of many pages costs more than that. For such requests, or whenever the exact figure
matters, pass the count from `client.messages.count_tokens(...)` instead (`Reservation.for_request(...,
input_tokens=...)`).

Over-reservation costs only waiting: `reconcile` refunds the difference from the response's usage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CHARS_PER_TOKEN", "MEDIA_TOKENS", "estimate_input_tokens", "text_tokens"]

CHARS_PER_TOKEN = 3
MEDIA_TOKENS = 4_800
_MEDIA_BLOCKS = frozenset({"image", "document"})
_OPAQUE_SOURCES = frozenset({"base64", "url", "file"})


def estimate_input_tokens(messages: Iterable[Any], *, system: Any = None, tools: Iterable[Any] | None = None) -> int:
    """An over-estimate of the input tokens of a Messages request with these `messages`, `system` prompt and
    `tools` (the SDK's params as dicts, or the SDK's own objects such as a previous response's content)."""
    return _count(list(messages)) + _count(system) + _count(list(tools or ()))


def text_tokens(text: str) -> int:
    """The estimate's rule for one string: a token per `CHARS_PER_TOKEN` ASCII characters (rounded up) and one per
    other character. Budgets apply it to a request's whole JSON (`keel._budget`)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // CHARS_PER_TOKEN) + len(text) - ascii_chars


def _count(value: Any) -> int:
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, Mapping):
        source = value.get("source")
        if value.get("type") in _MEDIA_BLOCKS and isinstance(source, Mapping) and source.get("type") in _OPAQUE_SOURCES:
            return MEDIA_TOKENS
        return sum(text_tokens(str(name)) + _count(item) for name, item in value.items())
    if isinstance(value, list | tuple):
        return sum(_count(item) for item in value)
    if value is None:
        return 0
    if hasattr(value, "model_dump"):  # the SDK's pydantic objects
        return _count(value.model_dump(exclude_none=True))
    return text_tokens(str(value))
