"""Where bucket sets live: the interface, the in-process backend, and the choice between it and Redis.

A backend runs one `BucketOp` on one bucket set atomically and answers a `BucketView`; the limiter does the
rest (deciding what to ask, and waiting). Everything a backend stores per bucket set is the six numbers of
`BucketState`, so every limiter sharing a backend and a key name shares one budget and one adaptation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from .._exceptions import LimiterUnavailable
from .buckets import BucketOp, BucketState, BucketView, apply

__all__ = ["REDIS_URL_ENV", "Backend", "LocalBackend", "connect_backend"]

REDIS_URL_ENV = "KEEL_REDIS_URL"

logger = logging.getLogger("keel.ratelimit")


class Backend(Protocol):
    """Runs bucket operations atomically. Safe to call from many threads; shared backends from many processes.

    `deadline` (a `time.monotonic()` value, or None) bounds how long a backend that cannot reach its store keeps
    retrying before it raises `LimiterUnavailable`; a backend must never answer a `take` it could not record.
    """

    def apply(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView: ...

    async def apply_async(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class LocalBackend:
    """Bucket sets in this process: a dict behind a lock, on `clock` (seconds; `time.monotonic` by default, a
    clock of one's own to run the arithmetic at chosen instants).

    Limiters of one process share a budget by sharing the backend object (and a key name). From asyncio,
    `apply_async` takes the same lock: it is held only for a few arithmetic operations, never while waiting, so
    the event loop is not blocked in any way that matters.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._states: dict[str, BucketState] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def apply(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView:
        with self._lock:
            now = self._clock()
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = BucketState.full(op.spec, now)
            return apply(state, op, now)

    async def apply_async(self, key: str, op: BucketOp, deadline: float | None = None) -> BucketView:
        return self.apply(key, op, deadline)

    def close(self) -> None:
        """Nothing to close: the buckets go with the object."""

    async def aclose(self) -> None:
        """Nothing to close: the buckets go with the object."""


def connect_backend(
    url: str | None = None, *, fallback: Literal["local"] | None = None, prefix: str | None = None
) -> Backend:
    """The backend for `url`, else the configured Redis (`$KEEL_REDIS_URL`, or `redis_url` in keel.toml: see
    `keel.config`): a `RedisBackend` when either is set (every process connecting with the same URL and limiter
    name then shares one budget), a `LocalBackend` when neither is.

    Redis unreachable: `LimiterUnavailable` naming the URL without its password, unless `fallback="local"`, which
    logs a warning and returns a `LocalBackend` (per-process limits: N processes may then send N times the
    budget). That choice is made here, at start, only: a Redis lost mid-run makes the limiter wait, never fall
    back. `prefix` is the Redis key prefix (default `keel:ratelimit`).
    """
    from ..config import load_settings

    url = url or load_settings().redis_url
    if not url:
        return LocalBackend()
    from .redis_backend import DEFAULT_PREFIX, RedisBackend  # the optional `redis` extra

    try:
        return RedisBackend(url, prefix=prefix or DEFAULT_PREFIX)
    except LimiterUnavailable as exc:
        if fallback != "local":
            raise
        logger.warning("%s; using per-process limits instead (fallback='local')", exc)
        return LocalBackend()
