"""Rate-limit buckets with the API's `anthropic-ratelimit-*` headers.

Limits are continuously refilled token buckets (60 RPM is one request a second), per emulator. Only
uncached input counts toward ITPM. By default the emulator reports the buckets without enforcing them;
`RateLimits(enforce=True)` answers 429 `rate_limit_error` with `retry-after` once a bucket runs dry.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from .errors import ApiError


@dataclass(frozen=True)
class RateLimits:
    requests_per_minute: int = 4_000
    input_tokens_per_minute: int = 2_000_000
    output_tokens_per_minute: int = 400_000
    enforce: bool = False


class _Bucket:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.level = float(capacity)
        self.rate = capacity / 60.0
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: int) -> float:
        """Seconds until `amount` is available (0 when it is now; inf when it never fits)."""
        if amount > self.capacity:
            return math.inf
        return max(0.0, (amount - self.level) / self.rate)

    def reset_at(self, now: float) -> str:
        seconds = (self.capacity - self.level) / self.rate
        return _rfc3339(int(time.time() + seconds))


@lru_cache(maxsize=256)
def _rfc3339(epoch: int) -> str:
    """Whole seconds, as the API sends them (cached: every response formats a few of these)."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateLimiter:
    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._requests = _Bucket(limits.requests_per_minute)
        self._input = _Bucket(limits.input_tokens_per_minute)
        self._output = _Bucket(limits.output_tokens_per_minute)
        self._lock = threading.Lock()

    def admit(self, input_tokens: int) -> None:
        """Take one request and its input tokens, or raise the 429 the API would send."""
        with self._lock:
            now = time.monotonic()
            for bucket in (self._requests, self._input, self._output):
                bucket.refill(now)
            if self.limits.enforce:
                waits = {
                    "requests": self._requests.wait_for(1),
                    "input tokens": self._input.wait_for(input_tokens),
                    "output tokens": self._output.wait_for(1),
                }
                kind, wait = max(waits.items(), key=lambda item: item[1])
                if wait > 0:
                    retry_after = "60" if math.isinf(wait) else str(max(1, math.ceil(wait)))
                    raise ApiError(
                        429,
                        f"This request would exceed your organization's rate limit of {self._limit_of(kind)} "
                        f"{kind} per minute. Please retry after the time in the retry-after header.",
                        headers={"retry-after": retry_after, **self._headers(now)},
                    )
            self._requests.level -= 1
            self._input.level -= input_tokens

    def settle(self, output_tokens: int) -> None:
        with self._lock:
            self._output.refill(time.monotonic())
            self._output.level -= output_tokens

    def _limit_of(self, kind: str) -> int:
        return {
            "requests": self.limits.requests_per_minute,
            "input tokens": self.limits.input_tokens_per_minute,
            "output tokens": self.limits.output_tokens_per_minute,
        }[kind]

    def headers(self) -> dict[str, str]:
        with self._lock:
            return self._headers(time.monotonic())

    def _headers(self, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        named = {"requests": self._requests, "input-tokens": self._input, "output-tokens": self._output}
        for name, bucket in named.items():
            remaining = max(0, int(bucket.level))
            if name != "requests":
                remaining = remaining // 1000 * 1000  # the API rounds token counts to thousands
            headers[f"anthropic-ratelimit-{name}-limit"] = str(bucket.capacity)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = bucket.reset_at(now)
        tokens_remaining = max(0, int(self._input.level)) + max(0, int(self._output.level))
        headers["anthropic-ratelimit-tokens-limit"] = str(self._input.capacity + self._output.capacity)
        headers["anthropic-ratelimit-tokens-remaining"] = str(tokens_remaining // 1000 * 1000)
        headers["anthropic-ratelimit-tokens-reset"] = min(
            headers["anthropic-ratelimit-input-tokens-reset"], headers["anthropic-ratelimit-output-tokens-reset"]
        )
        return headers
