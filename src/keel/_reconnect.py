"""One operation on a shared store, retried while the server cannot be reached, for a bounded time.

Used by the Redis tool store, the PostgreSQL ledgers and the Redis rate limiter: a lost connection (a server
restarting, a network cut) makes the caller wait, with a warning naming the store (its URL without the
password) on the first retry, and one when it answers again; nothing proceeds past an operation that did not
go through. After `reconnect_for` seconds, or at the caller's deadline if that comes first, the last error is
raised as the store's "unavailable" error.

An operation retried must be safe to repeat: its first try may have been applied with only the reply lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from ._exceptions import StoreUnavailable
from .ratelimit.urls import redact_text, redact_url

T = TypeVar("T")

_WAIT = wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05)
_STORES_LOGGER = logging.getLogger("keel.stores")


@dataclass(frozen=True)
class Reconnecting:
    """How one store retries: `transient` errors are retried for `reconnect_for` seconds, then raised as
    `unavailable(error)`. `secret_url` may hold a password: it only ever leaves this object redacted.

    Attributes:
        store: what the store is, for messages ("at-most-once tool store").
        secret_url: its address, password included.
        transient: the errors that mean "cannot be reached", and only those are retried.
        reconnect_for: how long one operation keeps retrying, in seconds.
        meanwhile: what the caller's wait means, for the warning ("nothing proceeds until it is recorded").
        error: makes the error raised at the end from the redacted URL and the reason; `None` raises
            `StoreUnavailable(store, url, reason)`.
        logger: where the warnings go.
    """

    store: str
    secret_url: str
    transient: tuple[type[BaseException], ...]
    reconnect_for: float = 30.0
    meanwhile: str = "nothing proceeds until it is recorded"
    error: Callable[[str, str], Exception] | None = None
    logger: logging.Logger = _STORES_LOGGER

    def __repr__(self) -> str:  # not the generated one, which would show secret_url
        return f"Reconnecting({self.store!r}, {self.url!r}, reconnect_for={self.reconnect_for})"

    @property
    def url(self) -> str:
        """The address without its password: safe to print."""
        return redact_url(self.secret_url)

    def reason(self, error: BaseException | None) -> str:
        """An error's type and message, with the URL's secrets removed."""
        return redact_text(f"{type(error).__name__}: {error}".strip().rstrip(":"), self.secret_url)

    def unavailable(self, error: BaseException) -> Exception:
        """The error that says the store cannot be reached, from the last transient error."""
        if self.error is None:
            return StoreUnavailable(self.store, self.url, self.reason(error))
        return self.error(self.url, self.reason(error))

    def call(self, operation: Callable[[], T], deadline: float | None = None) -> T:
        """`operation()`, retried on a transient error until `reconnect_for` has passed or the `deadline`
        (`time.monotonic()`) comes. The first try goes without tenacity (building its retrying object costs more
        than a Redis round trip)."""
        try:
            return operation()
        except self.transient as first:
            retrying = Retrying(**self._retrying(first, deadline))
        try:
            result: T = retrying(operation)
        except self.transient as last:
            raise self.unavailable(last) from None
        self._recovered()
        return result

    async def call_async(self, operation: Callable[[], Awaitable[T]], deadline: float | None = None) -> T:
        """`await operation()`, retried as `call` does, sleeping without blocking the event loop."""
        try:
            return await operation()
        except self.transient as first:
            retrying = AsyncRetrying(**self._retrying(first, deadline))

        async def attempt() -> T:  # a coroutine function: tenacity would not await what a plain one returns
            return await operation()

        try:
            result: T = await retrying(attempt)
        except self.transient as last:
            raise self.unavailable(last) from None
        self._recovered()
        return result

    def _retrying(self, first: BaseException, deadline: float | None) -> dict[str, Any]:
        """tenacity's settings after a first failure: retry until `reconnect_for` has passed or the `deadline`,
        whichever comes first, the last retry falling on that limit."""
        until = time.monotonic() + self.reconnect_for
        if deadline is not None:
            until = min(until, deadline)
        self._log(first, 1, 0.0, first=True)

        def wait(state: RetryCallState) -> float:
            return min(_WAIT(state), max(0.0, until - time.monotonic()))

        return {
            "stop": lambda state: time.monotonic() >= until,
            "wait": wait,
            "retry": retry_if_exception_type(self.transient),
            "before_sleep": lambda state: self._log(_error_of(state), state.attempt_number + 1, state.upcoming_sleep),
            "reraise": True,
        }

    def _recovered(self) -> None:
        self.logger.warning("%s at %s answers again; carrying on", self.store, self.url)

    def _log(self, error: BaseException | None, attempt: int, sleep: float, *, first: bool = False) -> None:
        self.logger.log(
            logging.WARNING if first else logging.DEBUG,
            "%s at %s unreachable (%s); %s; retrying for up to %.0f s (try %d, next in %.2f s)",
            self.store,
            self.url,
            self.reason(error),
            self.meanwhile,
            self.reconnect_for,
            attempt,
            sleep,
        )


def _error_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None
