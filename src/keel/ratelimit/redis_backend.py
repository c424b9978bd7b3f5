"""Bucket sets in Redis: one budget for every process that uses the same Redis and limiter name.

Each operation is one call of one Lua script (`buckets.lua`), which reads the bucket set, refills it on the Redis
server's clock (`TIME`: the machines' clocks never enter), decides and writes it back atomically: a `take`
debits all three buckets or none. A bucket set is one hash of six numbers, whatever the limits, and expires once
it would be full again.

The adaptive rate factor and the `retry-after` pause live in that hash too, so they are shared: the server's
limits belong to the organization, and a 429 seen by one process means the budget every process draws on is
exhausted. A factor per process would let the others go on at full rate into the same wall.

Failure behaviour, always closed:
- at start, an unreachable Redis (or a wrong password) raises `LimiterUnavailable` naming the URL without its
  password (`connect_backend(fallback="local")` is the only way to carry on without it);
- mid-run (Redis restarting, a network cut), an operation retries with tenacity (exponential backoff with
  jitter, up to 1 s apart) for at most `reconnect_for` seconds and never past the caller's deadline, then raises
  `LimiterUnavailable`. No reservation is granted meanwhile. A Redis restarted without persistence comes back
  with full buckets, as an idle limiter would.

The sync client is thread-safe (a connection pool). The asyncio client is made on first asynchronous use and
belongs to that event loop. Needs the optional `redis` extra (redis-py 8).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

try:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.commands.core import AsyncScript
    from redis.retry import Retry
except ImportError as exc:
    raise ImportError("the Redis rate-limit backend needs redis-py 8: pip install 'claude-keel[redis]'") from exc

from .._exceptions import LimiterUnavailable
from .._reconnect import Reconnecting
from .buckets import Amounts, BucketOp, BucketView

__all__ = ["DEFAULT_PREFIX", "RedisBackend"]

DEFAULT_PREFIX = "keel:ratelimit"
SCRIPT = resources.files(__package__).joinpath("buckets.lua").read_text(encoding="utf-8")

logger = logging.getLogger("keel.ratelimit")

_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class RedisBackend:
    """Bucket sets in the Redis at `url` (`redis://[user:password@]host:port/db`, `rediss://`, `unix://`), under
    keys `{prefix}:{limiter name}:{model class}`.

    Connects and pings at once: `LimiterUnavailable` if that fails. `connect_timeout` and `command_timeout` bound
    each connection attempt and each command; `reconnect_for` how long one operation keeps retrying a lost Redis.
    redis-py's own retries are turned off: the retrying is tenacity's, bounded by the caller's deadline.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        reconnect_for: float = 30.0,
        connect_timeout: float = 1.0,
        command_timeout: float = 2.0,
    ) -> None:
        self._net = Reconnecting(
            "rate-limit store",
            url,
            _UNREACHABLE,
            reconnect_for,
            meanwhile="no reservation is granted until it answers",
            error=LimiterUnavailable,
            logger=logger,
        )
        self.url = self._net.url
        """The address without its password: safe to print."""
        self.prefix = prefix
        self._options: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": command_timeout}
        try:
            self._redis = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **self._options)
        except ValueError as exc:
            raise ValueError(f"not a usable Redis URL: {self.url} ({self._net.reason(exc)})") from None
        self._script = self._redis.register_script(SCRIPT)
        self._async: redis.asyncio.Redis | None = None
        self._async_script: AsyncScript | None = None
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            self._redis.close()
            raise self._net.unavailable(exc) from None

    def apply(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView:
        keys, args = [f"{self.prefix}:{key}"], _argv(op)
        return _view(self._net.call(lambda: self._script(keys, args), deadline))

    async def apply_async(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView:
        keys, args, script = [f"{self.prefix}:{key}"], _argv(op), self._script_async()
        return _view(await self._net.call_async(lambda: script(keys, args), deadline))

    def close(self) -> None:
        """Close the sync client's connections (the asyncio client's: `aclose`)."""
        self._redis.close()

    async def aclose(self) -> None:
        """Close both clients' connections."""
        if self._async is not None:
            await self._async.aclose()
            self._async, self._async_script = None, None
        self.close()

    def _script_async(self) -> AsyncScript:
        if self._async_script is None:
            self._async = redis.asyncio.Redis.from_url(
                self._net.secret_url, retry=AsyncRetry(NoBackoff(), 0), **self._options
            )
            self._async_script = self._async.register_script(SCRIPT)
        return self._async_script


def _argv(op: BucketOp) -> list[str | float]:
    return [
        op.kind,
        *op.spec.capacities,
        *op.spec.rates,
        *op.amounts,
        op.factor_scale,
        op.factor_step,
        op.factor_floor,
        op.pause,
    ]


def _view(reply: list[Any]) -> BucketView:
    granted, wait, requests, input_tokens, output_tokens, factor, paused_for = reply
    levels = Amounts(float(requests), float(input_tokens), float(output_tokens))
    return BucketView(granted == 1, float(wait), levels, float(factor), float(paused_for))
