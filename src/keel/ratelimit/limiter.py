"""The limiter: reserve before sending, settle after the response, learn from the server.

The sync and asyncio methods come in pairs that build the same operations and read the same answers; only the
waiting (`time.sleep` or `asyncio.sleep`) and the backend call differ.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

from .._exceptions import AcquireTimeout, LimitExceedsCapacity
from .backends import Backend, LocalBackend
from .buckets import NOTHING, Amounts, BucketOp, BucketSpec, BucketView
from .headers import read_headers
from .limits import API_WINDOW, Adaptation, Limits, Reservation, model_class

__all__ = ["Permit", "RateLimiter"]

_BUCKETS = Amounts._fields


class Permit:
    """A granted reservation. Settle it once: `reconcile` with the response's usage, or `release` when the
    request failed without being served. A permit never settled keeps its whole reservation debited (as if
    the estimate had been the usage) until the buckets refill: nothing is ever held forever."""

    __slots__ = ("_limiter", "input_tokens", "model", "model_class", "output_tokens", "settled")

    def __init__(
        self, limiter: RateLimiter, model: str, model_class: str, input_tokens: int, output_tokens: int
    ) -> None:
        self._limiter = limiter
        self.model = model
        self.model_class = model_class
        self.input_tokens = input_tokens
        """Input tokens reserved."""
        self.output_tokens = output_tokens
        """Output tokens reserved."""
        self.settled = False

    def reconcile(self, input_tokens: int, output_tokens: int) -> None:
        """`RateLimiter.reconcile` of this permit."""
        self._limiter.reconcile(self, input_tokens, output_tokens)

    async def reconcile_async(self, input_tokens: int, output_tokens: int) -> None:
        await self._limiter.reconcile_async(self, input_tokens, output_tokens)

    def release(self) -> None:
        """`RateLimiter.release` of this permit."""
        self._limiter.release(self)

    async def release_async(self) -> None:
        await self._limiter.release_async(self)

    def __repr__(self) -> str:
        state = "settled" if self.settled else "open"
        return f"<Permit {self.model_class} in={self.input_tokens} out={self.output_tokens} {state}>"


class RateLimiter:
    """Client-side limits for the Messages API: three continuously refilled buckets (requests, input tokens,
    output tokens) per model class, shared by everything using the same `backend` and `name`.

        limiter = RateLimiter(Limits(requests=50, input_tokens=40_000, output_tokens=8_000))
        reservation = Reservation.for_request(model, messages, max_tokens=1024)
        try:
            with limiter.reserve(reservation, timeout=30) as permit:
                raw = sdk.messages.with_raw_response.create(model=model, max_tokens=1024, messages=messages)
                usage = raw.parse().usage
                permit.reconcile(usage.input_tokens + (usage.cache_creation_input_tokens or 0), usage.output_tokens)
                limiter.observe(model, raw.headers, raw.status_code)
        except anthropic.APIStatusError as err:  # the permit is already released
            limiter.observe(model, err.response.headers, err.status_code)
            raise

    `limits` apply to every model class, `per_class` overrides them for some (keys as `classify` names them:
    `"opus"`, `"haiku"`...). Response headers replace both with the server's limits as they arrive. The backend
    defaults to a `LocalBackend` of this limiter's own; `connect_backend()` gives the Redis one when
    `KEEL_REDIS_URL` is set. `name` keys the budget in the backend: give every limiter drawing on one API key's
    limits the same name (a label such as a workspace's; never the key itself, which would then sit in Redis).
    While a reservation does not fit, `acquire` sleeps until it should, but at most `poll_interval` seconds at a
    time, to notice refunds made meanwhile by other limiters. `window` is the period of the limits the server's
    headers state: a minute for the API (a test against an emulator whose clock runs faster shortens it).
    """

    def __init__(
        self,
        limits: Limits,
        *,
        backend: Backend | None = None,
        name: str = "default",
        per_class: Mapping[str, Limits] | None = None,
        adaptation: Adaptation | None = None,
        classify: Callable[[str], str] = model_class,
        poll_interval: float = 0.5,
        window: float = API_WINDOW,
    ) -> None:
        if name.startswith("sk-ant-"):
            raise ValueError("the limiter's name is stored in the backend in clear: use a label, not the API key")
        self.backend: Backend = backend if backend is not None else LocalBackend()
        self.name = name
        self.adaptation = adaptation or Adaptation()
        self.poll_interval = poll_interval
        self.window = window
        self._classify = classify
        self._default = limits.spec()
        self._specs = {klass: class_limits.spec() for klass, class_limits in (per_class or {}).items()}
        self._lock = threading.Lock()
        self._learned: set[str] = set()  # classes whose limits a response's headers have stated
        self._unsettled: dict[str, Amounts] = {}  # per class: what this limiter's unsettled permits reserved

    def limits_for(self, model: str) -> BucketSpec:
        """The capacities and refill rates in force for `model`'s class: configured, or learned from headers."""
        return self._spec(self._classify(model))

    # -- acquiring ----------------------------------------------------------------------------------------------

    def acquire(self, reservation: Reservation, *, timeout: float | None = None) -> Permit:
        """Reserve one request, the input tokens and the output allowance of `reservation`, all or nothing,
        waiting until they fit (at most `timeout` seconds: `AcquireTimeout`; 0 tries once; None waits as long
        as it takes). Raises `LimitExceedsCapacity` at once for a reservation larger than a bucket, and
        `LimiterUnavailable` when a shared store stays unreachable. Settle the permit afterwards."""
        attempt = _Attempt(self, reservation, timeout)
        while not (view := self.backend.apply(attempt.key, attempt.op(), attempt.deadline)).granted:
            time.sleep(attempt.pause_after(view))
        return attempt.permit()

    async def acquire_async(self, reservation: Reservation, *, timeout: float | None = None) -> Permit:
        """`acquire` for asyncio: the waiting is `asyncio.sleep`, the event loop runs meanwhile."""
        attempt = _Attempt(self, reservation, timeout)
        while not (view := await self.backend.apply_async(attempt.key, attempt.op(), attempt.deadline)).granted:
            await asyncio.sleep(attempt.pause_after(view))
        return attempt.permit()

    @contextmanager
    def reserve(self, reservation: Reservation, *, timeout: float | None = None) -> Iterator[Permit]:
        """`acquire`, and `release` the permit if the block raises before settling it."""
        permit = self.acquire(reservation, timeout=timeout)
        try:
            yield permit
        except BaseException:
            if not permit.settled:
                self.release(permit)
            raise

    @asynccontextmanager
    async def reserve_async(self, reservation: Reservation, *, timeout: float | None = None) -> AsyncIterator[Permit]:
        """`reserve` for asyncio (the release, too, is awaited)."""
        permit = await self.acquire_async(reservation, timeout=timeout)
        try:
            yield permit
        except BaseException:
            if not permit.settled:
                await self.release_async(permit)
            raise

    # -- settling -----------------------------------------------------------------------------------------------

    def reconcile(self, permit: Permit, input_tokens: int, output_tokens: int) -> None:
        """Settle `permit` with the real usage: refund what was reserved and not used, debit any overshoot.
        `input_tokens` counts what the API's input limit counts: `usage.input_tokens +
        usage.cache_creation_input_tokens` (cache reads are free of it). Settle before `observe`-ing the same
        response, so that its headers are not credited twice."""
        self.backend.apply(*self._settlement(permit, input_tokens, output_tokens))

    async def reconcile_async(self, permit: Permit, input_tokens: int, output_tokens: int) -> None:
        await self.backend.apply_async(*self._settlement(permit, input_tokens, output_tokens))

    def release(self, permit: Permit) -> None:
        """Settle `permit` for a request that failed without being served (a 429 or 529, a 4xx, a connection
        error): its tokens are refunded, its request is not. A refused request consumed no tokens; whether the
        server counted it as a request cannot be told, so the limiter counts it, which also slows a caller that
        keeps failing. A stream cut off after tokens came is not such a failure: `reconcile` it with the usage
        seen so far."""
        self.backend.apply(*self._settlement(permit, 0, 0))

    async def release_async(self, permit: Permit) -> None:
        await self.backend.apply_async(*self._settlement(permit, 0, 0))

    # -- learning -----------------------------------------------------------------------------------------------

    def observe(self, model: str, headers: Mapping[str, str], status: int = 200) -> None:
        """Learn from a response to a `model` request (any status): its `anthropic-ratelimit-*-limit` headers
        become the buckets' capacities (refilled over a minute), each level is lowered to the `-remaining` the
        server reports when that is lower, a throttling status (429, 529) cuts the rate factor and pauses
        acquisitions for its `retry-after`, and a success restores the factor step by step (`Adaptation`)."""
        self.backend.apply(*self._observation(model, headers, status))

    async def observe_async(self, model: str, headers: Mapping[str, str], status: int = 200) -> None:
        await self.backend.apply_async(*self._observation(model, headers, status))

    def snapshot(self, model: str) -> BucketView:
        """The buckets of `model`'s class as of now: levels, rate factor, pause left (changes nothing)."""
        return self.backend.apply(*self._peek(model))

    async def snapshot_async(self, model: str) -> BucketView:
        return await self.backend.apply_async(*self._peek(model))

    def close(self) -> None:
        self.backend.close()

    async def aclose(self) -> None:
        await self.backend.aclose()

    # -- the operations, shared by both sides --------------------------------------------------------------------

    def _spec(self, klass: str) -> BucketSpec:
        return self._specs.get(klass, self._default)

    def _key(self, klass: str) -> str:
        return f"{self.name}:{klass}"

    def _settlement(self, permit: Permit, input_tokens: int, output_tokens: int) -> tuple[str, BucketOp]:
        if permit._limiter is not self:
            raise ValueError(f"{permit!r} was granted by another limiter")
        if permit.settled:
            raise RuntimeError(f"{permit!r} is already settled")
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("usage cannot be negative")
        permit.settled = True
        self._count_unsettled(permit.model_class, -1, -permit.input_tokens, -permit.output_tokens)
        credits = Amounts(0, permit.input_tokens - input_tokens, permit.output_tokens - output_tokens)
        return self._key(permit.model_class), BucketOp("adjust", self._spec(permit.model_class), credits)

    def _count_unsettled(self, klass: str, requests: int, input_tokens: int, output_tokens: int) -> None:
        """Add a granted permit's reservation to the class's unsettled total (negative amounts: a settled one)."""
        with self._lock:
            was = self._unsettled.get(klass, NOTHING)
            self._unsettled[klass] = Amounts(was[0] + requests, was[1] + input_tokens, was[2] + output_tokens)

    def _observation(self, model: str, headers: Mapping[str, str], status: int) -> tuple[str, BucketOp]:
        klass = self._classify(model)
        report = read_headers(headers)
        in_flight = NOTHING
        with self._lock:
            spec = self._specs[klass] = self._spec(klass).learned(report.limits, self.window)
            if klass not in self._learned and any(limit is not None for limit in report.limits):
                # The first limits the server states: until now this limiter granted on its configured limits,
                # maybe far above the real ones. The server's `remaining` was measured when this response's request
                # arrived, before the requests still in flight: those are taken off it, once (later, the levels
                # already follow the real limits, and `remaining` only ever lowers them).
                self._learned.add(klass)
                in_flight = self._unsettled.get(klass, NOTHING)
        adaptation = self.adaptation
        throttled = status in adaptation.throttle_statuses
        op = BucketOp(
            "observe",
            spec,
            Amounts(
                *(
                    -1 if remaining is None else max(0.0, remaining - flying)
                    for remaining, flying in zip(report.remaining, in_flight, strict=True)
                )
            ),
            factor_scale=adaptation.decrease if throttled else 1.0,
            factor_step=adaptation.increase if 200 <= status < 300 else 0.0,
            factor_floor=adaptation.floor,
            pause=min(report.retry_after or 0.0, adaptation.max_pause) if throttled else 0.0,
        )
        return self._key(klass), op

    def _peek(self, model: str) -> tuple[str, BucketOp]:
        klass = self._classify(model)
        return self._key(klass), BucketOp("peek", self._spec(klass))


class _Attempt:
    """One `acquire` call: what to ask the backend each round, and how long to sleep between rounds."""

    def __init__(self, limiter: RateLimiter, reservation: Reservation, timeout: float | None) -> None:
        self.limiter = limiter
        self.reservation = reservation
        self.model_class = limiter._classify(reservation.model)
        self.key = limiter._key(self.model_class)
        self.amounts = Amounts(1, reservation.input_tokens, reservation.output_tokens)
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def op(self) -> BucketOp:
        """The `take`, against the capacities in force now (headers may have changed them since the last round)."""
        spec = self.limiter._spec(self.model_class)
        for bucket, amount, capacity in zip(_BUCKETS, self.amounts, spec.capacities, strict=True):
            if amount > capacity:
                raise LimitExceedsCapacity(bucket, int(amount), capacity, self.model_class)
        return BucketOp("take", spec, self.amounts)

    def pause_after(self, view: BucketView) -> float:
        """Seconds to sleep after a refused round; `AcquireTimeout` once the deadline has passed."""
        if self.deadline is None:
            return min(view.wait, self.limiter.poll_interval)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AcquireTimeout(self.model_class, self.timeout or 0.0, view.wait)
        return min(view.wait, left, self.limiter.poll_interval)

    def permit(self) -> Permit:
        """The granted reservation, counted as unsettled until it is settled."""
        reservation = self.reservation
        self.limiter._count_unsettled(self.model_class, 1, reservation.input_tokens, reservation.output_tokens)
        return Permit(
            self.limiter, reservation.model, self.model_class, reservation.input_tokens, reservation.output_tokens
        )
