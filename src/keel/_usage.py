"""Token usage: the one shape keel gives usage everywhere (records, prices, batch results, the report).

`Usage.of()` reads any usage the API or the SDK hands out (`anthropic.types.Usage`, `MessageDeltaUsage`, the
`usage` dict of a batch result line, or a `Usage`) into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

_COUNT_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_BREAKDOWN_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_API_FIELDS = (*_COUNT_FIELDS, "cache_creation")


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__, on the hot path
class Usage:
    """Token counts of one response (or of a whole call), by billing category.

    Attributes:
        input_tokens: uncached input tokens.
        output_tokens: generated tokens.
        cache_write_5m_tokens: input tokens written to the prompt cache with the 5-minute TTL (the default).
        cache_write_1h_tokens: input tokens written to the prompt cache with the 1-hour TTL.
        cache_read_tokens: input tokens read from the prompt cache.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        """Cache writes of both durations."""
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached or not: what a long-context price tier is decided on."""
        return self.input_tokens + self.cache_write_5m_tokens + self.cache_write_1h_tokens + self.cache_read_tokens

    @classmethod
    def of(cls, usage: Any) -> Usage:
        """Read the API's usage: an `anthropic.types.Usage` / `MessageDeltaUsage`, a dict of the same fields
        (a batch result line), or a `Usage` (returned as it is).

        Missing or None counts are 0. With a `cache_creation` breakdown, its ephemeral_5m/1h counts are used
        (any part of `cache_creation_input_tokens` the breakdown does not account for counts as a 5-minute
        write); without one, every cache write is a 5-minute write, the default TTL. A count that is not a
        whole number >= 0 raises TypeError or ValueError naming its field.
        """
        if type(usage) is cls:
            return usage
        # the SDK's usage model, the usual case, read straight from its field dict; anything else through `_fields`
        data = getattr(usage, "__dict__", None)
        if type(data) is not dict or "input_tokens" not in data:
            data = _fields(usage, _API_FIELDS)
            if data is None:
                raise TypeError(f"expected a usage object or mapping with token counts, got {type(usage).__name__}")
        # plain non-negative ints, the usual case, are checked in one expression; anything else field by field
        input_, output, created, read = map(data.get, _COUNT_FIELDS)
        if not (
            type(input_) is type(output) is type(created) is type(read) is int
            and input_ >= 0
            and output >= 0
            and created >= 0
            and read >= 0
        ):
            input_, output, created, read = _checked(data, _COUNT_FIELDS)
        breakdown = data.get("cache_creation")
        parts = getattr(breakdown, "__dict__", None)
        if breakdown is not None and (type(parts) is not dict or _BREAKDOWN_FIELDS[0] not in parts):
            parts = _fields(breakdown, _BREAKDOWN_FIELDS)
        if parts is None:
            return cls(input_, output, created, 0, read)
        five, hour = map(parts.get, _BREAKDOWN_FIELDS)
        if not (type(five) is type(hour) is int and five >= 0 and hour >= 0):
            five, hour = _checked(parts, _BREAKDOWN_FIELDS, "cache_creation.")
        return cls(input_, output, five + max(0, created - five - hour), hour, read)


USAGE_FIELDS = tuple(f.name for f in fields(Usage))
"""The field names of `Usage`, in order: the keys of every usage keel writes."""


def _fields(usage: Any, names: tuple[str, ...]) -> Mapping[str, Any] | None:
    """A usage-like object's fields by name, or None when it has none of `names`.

    For what is not an SDK model (`Usage.of` reads those from their `__dict__` itself): a plain dict is
    itself; any other object is read by `getattr`; a non-dict Mapping is checked last (its ABC check is the
    slow one).
    """
    if type(usage) is dict:
        return usage
    if any(hasattr(usage, name) for name in names):
        return {name: getattr(usage, name, None) for name in names}
    if isinstance(usage, Mapping):
        return usage
    return None


def _checked(fields: Mapping[str, Any], names: tuple[str, ...], prefix: str = "") -> tuple[int, ...]:
    """The named token counts, each checked on its own: None counts as 0, a bad value names its field."""
    return tuple(_count(fields.get(name), prefix + name) for name in names)


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"usage.{name}: expected a token count, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"usage.{name}: expected a whole number of tokens, got {value!r}")
    if value < 0:
        raise ValueError(f"usage.{name}: token count {value!r} is negative")
    return int(value)
