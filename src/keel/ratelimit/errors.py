"""The limiter's exceptions.

They subclass the standard exception each one is a kind of (`ValueError`, `TimeoutError`, `ConnectionError`),
so callers can catch them without importing keel. When keel's common base `KeelError` lands, each also
becomes a subclass of it. None of them ever holds a credential: a store's address appears redacted
(`redact_url`).
"""

from __future__ import annotations

__all__ = ["AcquireTimeout", "LimitExceedsCapacity", "LimiterUnavailable"]


class LimitExceedsCapacity(ValueError):
    """A reservation asks one bucket for more than the bucket can ever hold (e.g. 300,000 input tokens against
    an input-token limit of 200,000 per minute). It could never be granted, so `acquire` raises at once instead
    of waiting forever. Fix the request: a smaller prompt, a lower `max_tokens`, or an exact input count in
    place of the estimate.

    `bucket` is `"requests"`, `"input_tokens"` or `"output_tokens"`; `amount` what was asked, `capacity` the
    bucket's size when it was asked.
    """

    def __init__(self, bucket: str, amount: int, capacity: float, model_class: str) -> None:
        self.bucket = bucket
        self.amount = amount
        self.capacity = capacity
        self.model_class = model_class
        super().__init__(
            f"reservation of {amount:,} {bucket.replace('_', ' ')} exceeds the {model_class!r} bucket's capacity "
            f"of {capacity:,.0f}: it could never be granted"
        )


class AcquireTimeout(TimeoutError):
    """`acquire` reached its timeout before the reservation fitted (or while acquisitions were paused by a
    `retry-after`). Nothing was reserved. `wait` is the limiter's last estimate, in seconds, of how much longer
    it would have had to wait."""

    def __init__(self, model_class: str, timeout: float, wait: float) -> None:
        self.model_class = model_class
        self.timeout = timeout
        self.wait = wait
        super().__init__(
            f"no room in the {model_class!r} rate-limit buckets within {timeout:g} s (about {wait:.3g} s more needed)"
        )


class LimiterUnavailable(ConnectionError):
    """The limiter's shared store cannot be reached: at start (the address is wrong, the server is down), or
    mid-run for longer than the limiter keeps retrying. The limiter fails closed: it never grants a reservation
    it could not record. `url` is the store's address without its password."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"rate-limit store at {url} is unreachable: {reason}")
