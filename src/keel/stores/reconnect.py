"""One operation on a shared store, retried while the server cannot be reached, for a bounded time.

Used by the Redis tool store and the PostgreSQL ledger: a lost connection (a server restarting, a network cut)
makes the caller wait, with a warning naming the store (its URL without the password) on the first retry;
nothing proceeds past an operation that was not recorded. After `reconnect_for` seconds the last error is
raised as `StoreUnavailable`.

An operation retried must be safe to repeat: its first try may have been applied with only the reply lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from .._exceptions import StoreUnavailable
from ..ratelimit.urls import redact_text, redact_url

T = TypeVar("T")

logger = logging.getLogger("keel.stores")

_WAIT = wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05)


@dataclass(frozen=True)
class Reconnecting:
    """How one store retries: `transient` errors are retried for `reconnect_for` seconds, then raised as
    `StoreUnavailable(store, url, ...)`. `url` may hold a password: it only ever leaves this object redacted."""

    store: str
    secret_url: str
    transient: tuple[type[BaseException], ...]
    reconnect_for: float = 30.0

    def __repr__(self) -> str:  # not the generated one, which would show secret_url
        return f"Reconnecting({self.store!r}, {self.url!r}, reconnect_for={self.reconnect_for})"

    @property
    def url(self) -> str:
        """The address without its password: safe to print."""
        return redact_url(self.secret_url)

    def reason(self, error: BaseException | None) -> str:
        """An error's type and message, with the URL's secrets removed."""
        return redact_text(f"{type(error).__name__}: {error}".strip().rstrip(":"), self.secret_url)

    def unavailable(self, error: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.store, self.url, self.reason(error))

    def call(self, operation: Callable[[], T]) -> T:
        """`operation()`, retried on a transient error until `reconnect_for` has passed. The first try goes
        without tenacity (building its retrying object costs more than a Redis round trip)."""
        try:
            return operation()
        except self.transient as first:
            error: BaseException = first
        until = time.monotonic() + self.reconnect_for
        self._log(error, 1, 0.0, first=True)

        def wait(state: RetryCallState) -> float:
            return min(_WAIT(state), max(0.0, until - time.monotonic()))

        try:
            result: T = Retrying(
                stop=lambda state: time.monotonic() >= until,
                wait=wait,
                retry=retry_if_exception_type(self.transient),
                before_sleep=lambda state: self._log(_error_of(state), state.attempt_number + 1, state.upcoming_sleep),
                reraise=True,
            )(operation)
        except self.transient as last:
            raise self.unavailable(last) from None
        logger.warning("%s at %s answers again; carrying on", self.store, self.url)
        return result

    def _log(self, error: BaseException | None, attempt: int, sleep: float, *, first: bool = False) -> None:
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "%s at %s unreachable (%s); nothing proceeds until it is recorded; retrying for up to %.0f s "
            "(try %d, next in %.2f s)",
            self.store,
            self.url,
            self.reason(error),
            self.reconnect_for,
            attempt,
            sleep,
        )


def _error_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None
