"""What the limiter is told: the limits of a bucket set, how it adapts, and what one request reserves."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .buckets import Amounts, BucketSpec
from .estimate import estimate_input_tokens

__all__ = ["API_WINDOW", "Adaptation", "Limits", "Reservation", "model_class"]

API_WINDOW = 60.0
"""The API's limits are per minute: a bucket of capacity N refills at N/60 per second."""

_CLASS_RE = re.compile(r"claude-(?:\d+(?:[-.]\d+)*-)?([a-z]+)")


def model_class(model: str) -> str:
    """The rate-limit class of a model id: its family (`opus`, `sonnet`, `haiku`, ...), whatever the version or
    date (`claude-opus-4-5-20251101` and `claude-opus-5` are both `opus`; `claude-3-5-sonnet-20241022` is
    `sonnet`). An id of another shape is its own class.

    The API limits each model class (Opus 4.x traffic shares one limit, for instance). Grouping by family can
    only put more models in one bucket set than the server does, which errs on the safe side; pass your own
    function as `RateLimiter(classify=...)` (e.g. `lambda model: model` for one set per model id)."""
    match = _CLASS_RE.match(model)
    return match.group(1) if match else model


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one bucket set, as continuously refilled buckets (capacity = the limit, refilled at
    limit/per per second).

    Attributes:
        requests: requests per window.
        input_tokens: uncached input tokens (cache writes included) per window.
        output_tokens: output tokens per window.
        per: the window in seconds: 60 for the API's per-minute limits; a shorter one gives tests and demos limits
            that refill in a second.
    """

    requests: int
    input_tokens: int
    output_tokens: int
    per: float = API_WINDOW

    def __post_init__(self) -> None:
        if min(self.requests, self.input_tokens, self.output_tokens) <= 0 or self.per <= 0:
            raise ValueError(f"limits and window must be positive: {self!r}")

    def spec(self) -> BucketSpec:
        capacities = Amounts(self.requests, self.input_tokens, self.output_tokens)
        return BucketSpec(capacities, Amounts(*(capacity / self.per for capacity in capacities)))


@dataclass(frozen=True, slots=True)
class Adaptation:
    """How the rate follows the server's signals. With the defaults, one 429 halves the rate and ten successes
    restore it.

    Attributes:
        decrease: a throttling answer multiplies the refill-rate factor by this.
        increase: each success (2xx) adds this back to the factor, up to 1.
        floor: the factor never goes below this.
        max_pause: a throttling answer pauses acquisitions for its `retry-after`, at most this many seconds.
        throttle_statuses: the statuses that throttle: 429 rate limited, 529 overloaded.
    """

    decrease: float = 0.5
    increase: float = 0.05
    floor: float = 0.05
    max_pause: float = API_WINDOW
    throttle_statuses: frozenset[int] = frozenset({429, 529})

    def __post_init__(self) -> None:
        if not (0 < self.decrease <= 1 and self.increase >= 0 and 0 < self.floor <= 1 and self.max_pause >= 0):
            raise ValueError(f"adaptation out of range: {self!r}")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one request reserves before it is sent: one request and these tokens.

    Attributes:
        model: the model id (its class picks the bucket set).
        input_tokens: an estimate, or the exact count from `count_tokens`.
        output_tokens: the output allowance; the request's `max_tokens` is the safe choice.
    """

    model: str
    input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if self.input_tokens < 0 or self.output_tokens < 0:
            raise ValueError(f"token amounts cannot be negative: {self!r}")

    @classmethod
    def for_request(
        cls,
        model: str,
        messages: Iterable[Any],
        *,
        max_tokens: int,
        system: Any = None,
        tools: Iterable[Any] | None = None,
        input_tokens: int | None = None,
    ) -> Reservation:
        """The reservation of a Messages request: `input_tokens` if given (an exact count), else
        `estimate_input_tokens(messages, system=system, tools=tools)`, and `max_tokens` of output."""
        if input_tokens is None:
            input_tokens = estimate_input_tokens(messages, system=system, tools=tools)
        return cls(model, input_tokens, max_tokens)
