"""Rate limits: continuously refilled token buckets per API key and model class, their headers, and the 429s.

Each API key has, for each model class (the catalog's `rate_limit_class`: opus, sonnet, haiku, fable, mythos),
three buckets holding a minute's worth of requests, input tokens and output tokens, refilled continuously (60 RPM
is one request a second). A request takes one request and its input tokens (uncached input and cache writes; cache
reads are free) when it is admitted; output tokens are taken when they are produced (`Admission.settle`), never
reserved from `max_tokens`. A request is admitted while the output bucket is not empty.

By default the buckets are only reported, in the `anthropic-ratelimit-*` headers. With `RateLimits(enforce=True)` a
request that does not fit gets the API's 429 `rate_limit_error` with `retry-after` (whole seconds, as the API sends
it) and `retry-after-ms` (the exact wait, which the SDK prefers). An optional acceleration limit (`Ramp`) adds a
second set of buckets that start at a share of the limits and grow by a share per minute: a request that fits the
limits but not the ramp gets a 429 with `error.details.error_code = "ramp_limit_exceeded"`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .catalog import ModelSpec
from .clock import Clock
from .errors import ApiError
from .keys import key_id

MINUTE = 60.0
_EPSILON = 1e-6  # seconds: a shorter wait is a rounding error (clock times in epoch seconds carry ~0.2 µs)
RATE_LIMITS_URL = "https://docs.claude.com/en/api/rate-limits"
_NAMES = {"requests": "requests", "input-tokens": "input tokens", "output-tokens": "output tokens"}


class LimitSpecError(ValueError):
    """A rate-limit setting that cannot be used: names the field and, from a scenario file, its table."""

    def __init__(self, reason: str, *, name: str, table: str | None = None, entry: int | None = None) -> None:
        self.reason = reason
        self.name = name
        self.table = table  # `limits`, `limits.keys` (an array of tables: `entry` is 1-based) or `limits.ramp`
        self.entry = entry
        where = "" if table is None else f"[[{table}]] #{entry}: " if entry is not None else f"[{table}]: "
        super().__init__(f"{where}{name}: {reason}")

    def at(self, table: str, entry: int | None = None) -> LimitSpecError:
        """The same error, placed in a scenario file's table."""
        return LimitSpecError(self.reason, name=self.name, table=table, entry=entry)


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LimitSpecError(f"expected a whole number >= 1, got {value!r}", name=name)
    return value


def _share(name: str, value: Any, most: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (most and value > most):
        bound = f"> 0 and <= {most:g}" if most else "> 0"
        raise LimitSpecError(f"expected a number {bound}, got {value!r}", name=name)
    return float(value)


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one API key, for each model class."""

    requests_per_minute: int = 4_000
    input_tokens_per_minute: int = 2_000_000
    output_tokens_per_minute: int = 400_000

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute"):
            _whole(name, getattr(self, name))

    def per_minute(self) -> dict[str, int]:
        return {
            "requests": self.requests_per_minute,
            "input-tokens": self.input_tokens_per_minute,
            "output-tokens": self.output_tokens_per_minute,
        }


@dataclass(frozen=True)
class Ramp:
    """The acceleration limit: from a key's first request to a model class it may use `start` x its limits, a share
    that grows by `growth` per minute up to the full limits."""

    start: float = 0.2
    growth: float = 0.2

    def __post_init__(self) -> None:
        _share("start", self.start, 1.0)
        _share("growth", self.growth, None)

    def share(self, minutes: float) -> float:
        return min(1.0, self.start + self.growth * minutes)


@dataclass(frozen=True)
class RateLimits(Limits):
    """The limits of every key (its own from `keys`, or these), whether they are enforced, and any ramp."""

    enforce: bool = False
    keys: Mapping[str, Limits] = field(default_factory=dict)  # API key -> its limits
    ramp: Ramp | None = None  # acceleration limit, applied with `enforce`


# --- the `[limits]` table of a scenario file -----------------------------------------------------------------------

_SHORT = {"rpm": "requests_per_minute", "itpm": "input_tokens_per_minute", "otpm": "output_tokens_per_minute"}


def _table(raw: Any, known: set[str], table: str, entry: int | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise LimitSpecError("expected a table", name=table.rsplit(".", 1)[-1]).at(table, entry)
    for name in raw:
        if name not in known:
            raise LimitSpecError(f"unknown field (known: {', '.join(sorted(known))})", name=name).at(table, entry)
    return raw


def _limits(raw: dict[str, Any], base: Limits, table: str, entry: int | None = None) -> Limits:
    try:
        return Limits(**{long: _whole(short, raw.get(short, getattr(base, long))) for short, long in _SHORT.items()})
    except LimitSpecError as err:
        raise err.at(table, entry) from None


def limits_from_toml(raw: Any) -> RateLimits:
    """A scenario file's `[limits]` table; a bad value raises `LimitSpecError` naming its table and field."""
    table = _table(raw, {*_SHORT, "enforce", "keys", "ramp"}, "limits")
    defaults = _limits(table, Limits(), "limits")
    enforce = table.get("enforce", True)
    if not isinstance(enforce, bool):
        raise LimitSpecError(f"expected true or false, got {enforce!r}", name="enforce").at("limits")
    raw_keys = table.get("keys", [])
    if not isinstance(raw_keys, list):
        raise LimitSpecError("expected an array of tables ([[limits.keys]])", name="keys").at("limits")
    keys: dict[str, Limits] = {}
    for entry, raw_key in enumerate(raw_keys, 1):
        key_table = _table(raw_key, {"key", *_SHORT}, "limits.keys", entry)
        api_key = key_table.get("key")
        if not isinstance(api_key, str) or not api_key:
            raise LimitSpecError("expected the API key, a non-empty string", name="key").at("limits.keys", entry)
        if api_key in keys:
            raise LimitSpecError("the same key as an earlier entry", name="key").at("limits.keys", entry)
        keys[api_key] = _limits(key_table, defaults, "limits.keys", entry)
    ramp = None
    if "ramp" in table:
        ramp_table = _table(table["ramp"], {"start", "growth"}, "limits.ramp")
        try:
            ramp = Ramp(**ramp_table)
        except LimitSpecError as err:
            raise err.at("limits.ramp") from None
    return RateLimits(
        defaults.requests_per_minute,
        defaults.input_tokens_per_minute,
        defaults.output_tokens_per_minute,
        enforce=enforce,
        keys=keys,
        ramp=ramp,
    )


# --- buckets ---------------------------------------------------------------------------------------------------------


class _Bucket:
    """A token bucket holding up to `capacity`, refilled at `capacity` per minute; it may be overdrawn (output)."""

    __slots__ = ("capacity", "level", "stamp")

    def __init__(self, capacity: float, now: float) -> None:
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / MINUTE)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is in the bucket (0: now; inf: never, the bucket holds less)."""
        if amount > self.capacity:
            return math.inf
        wait = (amount - self.level) * MINUTE / self.capacity
        return wait if wait > _EPSILON else 0.0

    def seconds_to_full(self) -> float:
        return max(0.0, (self.capacity - self.level) * MINUTE / self.capacity)


@lru_cache(maxsize=256)
def _rfc3339(epoch: int) -> str:
    """Whole seconds, as the API sends them (cached: every response formats a few of these)."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Account:
    """The buckets of one API key for one model class, and with an acceleration limit those of its ramp."""

    def __init__(self, limits: Limits, ramp: Ramp | None, now: float) -> None:
        self.limits = limits.per_minute()
        self.buckets = {name: _Bucket(limit, now) for name, limit in self.limits.items()}
        self.ramp = ramp
        self.started = now
        self.ramp_buckets = {name: _Bucket(self.ramp_capacity(name, now), now) for name in self.limits} if ramp else {}

    def share(self, now: float) -> float:
        return self.ramp.share((now - self.started) / MINUTE) if self.ramp else 1.0

    def ramp_capacity(self, name: str, now: float) -> float:
        """What the ramp lets through per minute now (at least one: a first request always passes it)."""
        return max(1.0, self.limits[name] * self.share(now))

    def refill(self, now: float) -> None:
        for bucket in self.buckets.values():
            bucket.refill(now)
        for name, bucket in self.ramp_buckets.items():
            bucket.capacity = self.ramp_capacity(name, now)
            bucket.refill(now)

    def take(self, name: str, amount: int) -> None:
        self.buckets[name].level -= amount
        if self.ramp_buckets:
            self.ramp_buckets[name].level -= amount

    def ramp_wait(self, name: str, amount: int, now: float) -> float:
        """Seconds until the ramp lets `amount` through: its share must have grown enough, and the bucket refilled."""
        assert self.ramp is not None
        bucket = self.ramp_buckets[name]
        if amount <= bucket.capacity:
            return bucket.wait_for(amount)
        growing = (amount / self.limits[name] - self.share(now)) / self.ramp.growth * MINUTE
        return max(growing, (amount - bucket.level) * MINUTE / bucket.capacity)

    def headers(self, now: float, binding: str | None) -> dict[str, str]:
        """The twelve `anthropic-ratelimit-*` headers; `tokens-*` shows the binding token bucket, else the sum."""
        headers: dict[str, str] = {}
        for name, bucket in self.buckets.items():
            remaining = max(0, math.floor(bucket.level))
            if name != "requests":
                remaining = remaining // 1000 * 1000  # the API rounds token counts down to thousands
            headers[f"anthropic-ratelimit-{name}-limit"] = str(self.limits[name])
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(int(now + bucket.seconds_to_full()))
        if binding is None:
            binding = next((n for n in ("input-tokens", "output-tokens") if self.buckets[n].level < 1), None)
        if binding in ("input-tokens", "output-tokens"):
            for part in ("limit", "remaining", "reset"):
                headers[f"anthropic-ratelimit-tokens-{part}"] = headers[f"anthropic-ratelimit-{binding}-{part}"]
        else:  # no token limit binds: the total of input and output tokens, as the API reports it
            total = sum(max(0, math.floor(self.buckets[n].level)) for n in ("input-tokens", "output-tokens"))
            limit = self.limits["input-tokens"] + self.limits["output-tokens"]
            headers["anthropic-ratelimit-tokens-limit"] = str(limit)
            headers["anthropic-ratelimit-tokens-remaining"] = str(total // 1000 * 1000)
            headers["anthropic-ratelimit-tokens-reset"] = min(
                headers["anthropic-ratelimit-input-tokens-reset"], headers["anthropic-ratelimit-output-tokens-reset"]
            )
        return headers


class Admission:
    """An admitted request: the headers its response carries, and where its output tokens go when produced."""

    def __init__(self, limiter: RateLimiter, account: _Account, headers: dict[str, str]) -> None:
        self.headers = headers
        self._limiter = limiter
        self._account = account

    def settle(self, output_tokens: int) -> None:
        """Take the output tokens produced (the bucket may go below zero: later requests then wait)."""
        self._limiter.settle(self._account, output_tokens)


def _retry_headers(wait: float, speed: float) -> dict[str, str]:
    """`retry-after` (whole seconds) and `retry-after-ms` for a wait of `wait` seconds on a clock running `speed`
    times as fast as the wall clock: the client waits in real time (a frozen clock, speed 0, gives the wait as is)."""
    if math.isinf(wait):  # more than the bucket ever holds: no wait helps
        return {"retry-after": "60"}
    if speed > 0:
        wait /= speed
    return {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}


class RateLimiter:
    """The buckets of every (API key, model class); thread-safe."""

    def __init__(self, limits: RateLimits, clock: Clock, organization_id: str) -> None:
        self.limits = limits
        self.clock = clock
        self.organization_id = organization_id
        self._limits_by_id = {key_id(api_key): key_limits for api_key, key_limits in limits.keys.items()}
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._lock = threading.Lock()

    def _new_account(self, key: str, now: float) -> _Account:
        ramp = self.limits.ramp if self.limits.enforce else None
        return _Account(self._limits_by_id.get(key, self.limits), ramp, now)

    def admit(self, key: str, model: ModelSpec, input_tokens: int) -> Admission:
        """Take one request and its input tokens for the key (by `key_id`), or raise the 429 the API would send."""
        with self._lock:
            now = self.clock.now()
            account = self._accounts.get((key, model.rate_limit_class))
            if account is None:
                account = self._accounts[(key, model.rate_limit_class)] = self._new_account(key, now)
            account.refill(now)
            needs = {"requests": 1, "input-tokens": input_tokens, "output-tokens": 1}
            if self.limits.enforce:
                self._check(account, needs, now)
            account.take("requests", 1)
            account.take("input-tokens", input_tokens)
            return Admission(self, account, account.headers(now, None))

    def _check(self, account: _Account, needs: dict[str, int], now: float) -> None:
        name, wait = max(((n, account.buckets[n].wait_for(amount)) for n, amount in needs.items()), key=lambda x: x[1])
        if wait > 0:
            message = (
                f"This request would exceed the rate limit for your organization ({self.organization_id}) of "
                f"{account.limits[name]:,} {_NAMES[name]} per minute. For details, refer to: {RATE_LIMITS_URL}. "
                "You can see the response headers for current usage. Please reduce the prompt length or the maximum "
                "tokens requested, or try again later."
            )
            raise ApiError(
                429, message, headers={**account.headers(now, name), **_retry_headers(wait, self.clock.speed)}
            )
        if account.ramp is None:
            return
        name, wait = max(((n, account.ramp_wait(n, amount, now)) for n, amount in needs.items()), key=lambda x: x[1])
        if wait > 0:
            message = (
                f"This request would exceed your organization's acceleration limit: for now it may use "
                f"{account.share(now):.0%} of its {account.limits[name]:,} {_NAMES[name]} per minute, a share that "
                "grows every minute. Ramp up gradually, and retry after the time in the retry-after header."
            )
            raise ApiError(
                429,
                message,
                error_code="ramp_limit_exceeded",
                headers={**account.headers(now, None), **_retry_headers(wait, self.clock.speed)},
            )

    def settle(self, account: _Account, output_tokens: int) -> None:
        with self._lock:
            account.refill(self.clock.now())
            account.take("output-tokens", output_tokens)

    def headers(self, key: str, model: ModelSpec) -> dict[str, str]:
        """The headers of a response that took nothing from the buckets (a refused or failed request)."""
        with self._lock:
            now = self.clock.now()
            account = self._accounts.get((key, model.rate_limit_class)) or self._new_account(key, now)
            account.refill(now)
            return account.headers(now, None)
