"""Pacing a call's attempts with a rate limiter (`keel.ratelimit.RateLimiter`, passed as `Client(limiter=...)`).

Every HTTP attempt of a Messages request, each retry of the SDK's loop included, first takes a permit: one
request, the request's estimated input tokens and `max_tokens` of output. Then:

- an error response (a 429, a 529, a 4xx) releases the permit's tokens and tells the limiter, which slows down
  on 429/529 and holds off for their `retry-after`;
- no response at all (a connection error) releases the permit;
- a 2xx keeps the permit until the response's body ends: it is then settled with the usage the body reported
  (the refund of an over-estimate, or the debit of an under-estimate), and only then are the response's
  rate-limit headers read, so that the server's `remaining` (which already counts this request) is not
  credited twice. A stream broken or left after its `message_start` is settled with the usage seen so far.

A call with a deadline (the interactive policy) waits for a permit at most until the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from anthropic._request import APIRequest

from ._usage import Usage
from .ratelimit import Permit, RateLimiter, Reservation


def _reservation(request: APIRequest) -> Reservation | None:
    """What a Messages request reserves; None for any other endpoint (token counts, batches, models)."""
    body = request.options.json_data
    if request.options.method != "post" or not request.options.url.endswith("/messages") or not isinstance(body, dict):
        return None
    return Reservation.for_request(
        str(body.get("model", "")),
        body.get("messages") or [],
        max_tokens=int(body.get("max_tokens") or 0),
        system=body.get("system"),
        tools=body.get("tools"),
    )


def _timeout(deadline_at: float | None) -> float | None:
    return None if deadline_at is None else max(0.0, deadline_at - time.monotonic())


def _counts(usage: Any) -> tuple[int, int]:
    """Input tokens as the input limit counts them (uncached input and cache writes), and output tokens."""
    counts = Usage.of(usage)
    return counts.input_tokens + counts.cache_write_tokens, counts.output_tokens


class Pacing:
    """One call's use of the limiter: the permit of its attempt in flight, and the headers of its last 2xx."""

    __slots__ = ("headers", "limiter", "permit", "waited")

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.permit: Permit | None = None
        self.headers: Mapping[str, str] | None = None  # of a 2xx response whose permit is not settled yet
        self.waited = 0.0  # seconds spent waiting for permits, every attempt of the call included

    def acquire(self, request: APIRequest, deadline_at: float | None) -> None:
        """Before an attempt: wait for its permit (a permit left from an earlier attempt is released first)."""
        self.settle(None)
        reservation = _reservation(request)
        if reservation is not None:
            began = time.monotonic()
            self.permit = self.limiter.acquire(reservation, timeout=_timeout(deadline_at))
            self.waited += time.monotonic() - began

    async def acquire_async(self, request: APIRequest, deadline_at: float | None) -> None:
        await self.settle_async(None)
        reservation = _reservation(request)
        if reservation is not None:
            began = time.monotonic()
            self.permit = await self.limiter.acquire_async(reservation, timeout=_timeout(deadline_at))
            self.waited += time.monotonic() - began

    def served(self, headers: Mapping[str, str]) -> None:
        """A 2xx: the permit waits for the body's usage (`settle`)."""
        if self.permit is not None:
            self.headers = headers

    def refused(self, headers: Mapping[str, str] | None, status: int) -> None:
        """An error response (`headers` and its status), or none at all (`headers` None): nothing was served."""
        permit, self.permit = self.permit, None
        if permit is not None:
            permit.release()
            if headers is not None:
                self.limiter.observe(permit.model, headers, status)

    async def refused_async(self, headers: Mapping[str, str] | None, status: int) -> None:
        permit, self.permit = self.permit, None
        if permit is not None:
            await permit.release_async()
            if headers is not None:
                await self.limiter.observe_async(permit.model, headers, status)

    def settle(self, usage: Any) -> None:
        """The body of the 2xx ended: settle its permit with the usage it reported (None: nothing was reported,
        so nothing was served), then learn from its headers."""
        permit, headers, self.permit, self.headers = self.permit, self.headers, None, None
        if permit is None:
            return
        if usage is None:
            permit.release()
        else:
            permit.reconcile(*_counts(usage))
        if headers is not None:
            self.limiter.observe(permit.model, headers, 200)

    async def settle_async(self, usage: Any) -> None:
        permit, headers, self.permit, self.headers = self.permit, self.headers, None, None
        if permit is None:
            return
        if usage is None:
            await permit.release_async()
        else:
            await permit.reconcile_async(*_counts(usage))
        if headers is not None:
            await self.limiter.observe_async(permit.model, headers, 200)
