"""What a response's headers say about the rate limits.

`anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining}` give each bucket's per-minute
limit and what is left of it (token counts rounded to thousands); `retry-after-ms` or `retry-after` (seconds,
or an HTTP date) say how long to hold off after a 429. The `-reset` headers are not read: with continuous
refill they follow from limit and remaining (reset = now + (limit - remaining) / rate), to the second only.
The combined `anthropic-ratelimit-tokens-*` headers are not read either: the input and output buckets are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .._retrying import retry_after_seconds

__all__ = ["ServerReport", "read_headers"]

_BUCKETS = ("requests", "input-tokens", "output-tokens")
_Triple = tuple[int | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class ServerReport:
    """The rate-limit headers of one response, per bucket (requests, input tokens, output tokens); None where
    a header is absent or unreadable."""

    limits: _Triple
    remaining: _Triple
    retry_after: float | None


def read_headers(headers: Mapping[str, str]) -> ServerReport:
    """Read a response's headers (any mapping; names in any case, as `httpx.Headers` or a plain dict)."""
    named = {name.lower(): value for name, value in headers.items()}
    return ServerReport(_per_bucket(named, "limit"), _per_bucket(named, "remaining"), retry_after_seconds(named))


def _per_bucket(headers: Mapping[str, str], field: str) -> _Triple:
    requests, input_tokens, output_tokens = (_count(headers, f"anthropic-ratelimit-{b}-{field}") for b in _BUCKETS)
    return requests, input_tokens, output_tokens


def _count(headers: Mapping[str, str], name: str) -> int | None:
    try:
        value = int(headers[name])
    except (KeyError, ValueError):
        return None
    return value if value >= 0 else None
