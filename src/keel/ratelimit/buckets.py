"""The bucket arithmetic: what every backend does to one bucket set (requests, input tokens, output tokens).

A bucket set is six numbers: three levels, the time they were measured, the rate factor the adaptation
sets, and the time acquisitions are paused until (a `retry-after`). Its state is that constant size
whatever the limits: the limits themselves (`BucketSpec`) travel with every operation instead of being
stored, so a limit learned from response headers takes effect on the next operation.

Every operation first refills the three buckets continuously from the time elapsed, at `rate * factor`,
never above capacity, then does one of four things (`BucketOp.kind`):

- `take`: if acquisitions are paused, answer the pause left; if each bucket holds its amount, debit all
  three (granted); otherwise debit nothing and answer the wait until the fullest shortfall is refilled.
  All or nothing.
- `adjust`: add signed amounts (a refund is positive, an overshoot debit negative, which may take a level
  below zero: that debt is repaid by refill before the next grant).
- `observe`: lower each level to what the server reports remaining (never raise it: the server does not see
  reservations in flight), scale and step the rate factor (multiplicative decrease on throttling, additive
  increase on success, kept within [floor, 1]) and pause acquisitions for a `retry-after`.
- `peek`: nothing more; the refilled state is read.

`apply` is this arithmetic for the in-process backend. The Redis backend runs the same in `buckets.lua`, on the
Redis server's clock; the shared test suite runs both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

__all__ = ["Amounts", "BucketOp", "BucketSpec", "BucketState", "BucketView", "OpKind", "apply"]

OpKind = Literal["take", "adjust", "observe", "peek"]


class Amounts(NamedTuple):
    """One number per bucket, in the buckets' fixed order."""

    requests: float
    input_tokens: float
    output_tokens: float


NOTHING = Amounts(0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """The limits of one bucket set.

    Attributes:
        capacities: what each bucket holds at most.
        rates: what each bucket refills per second.
    """

    capacities: Amounts
    rates: Amounts

    def learned(self, limits: tuple[int | None, int | None, int | None], window: float) -> BucketSpec:
        """This spec with the server's per-window limits in place of the configured ones where known."""
        capacities = Amounts(*(old if new is None else new for old, new in zip(self.capacities, limits, strict=True)))
        rates = Amounts(*(old if new is None else new / window for old, new in zip(self.rates, limits, strict=True)))
        return BucketSpec(capacities, rates)


@dataclass(frozen=True, slots=True)
class BucketOp:
    """One operation on a bucket set, as every backend applies it.

    Attributes:
        kind: "take", "adjust", "observe" or "peek".
        spec: the bucket set's limits.
        amounts: `take`: the debits; `adjust`: the signed credits; `observe`: the server's remaining (negative: not
            reported); `peek`: nothing.
        factor_scale: `observe` only: factor becomes `clamp(factor * factor_scale + factor_step, factor_floor, 1)`.
        factor_step: see `factor_scale`.
        factor_floor: see `factor_scale`.
        pause: `observe` only: pause acquisitions for this many seconds.
    """

    kind: OpKind
    spec: BucketSpec
    amounts: Amounts = NOTHING
    factor_scale: float = 1.0
    factor_step: float = 0.0
    factor_floor: float = 0.0
    pause: float = 0.0


@dataclass(frozen=True, slots=True)
class BucketView:
    """A bucket set after an operation.

    Attributes:
        granted: a `take` was granted.
        wait: when a `take` was not granted, the seconds until it would fit at the current rate, or until the pause
            ends.
        levels: what each bucket holds now.
        factor: the refill-rate factor now.
        paused_for: the pause left, in seconds.
    """

    granted: bool
    wait: float
    levels: Amounts
    factor: float
    paused_for: float


@dataclass(slots=True)
class BucketState:
    """The stored state of one bucket set (in-process backend; the Redis backend keeps the same six numbers in a
    hash)."""

    levels: Amounts
    stamp: float
    factor: float = 1.0
    paused_until: float = 0.0

    @classmethod
    def full(cls, spec: BucketSpec, now: float) -> BucketState:
        """A bucket set nobody has used (or idle long enough to be full): every bucket at capacity."""
        return cls(spec.capacities, now)


def apply(state: BucketState, op: BucketOp, now: float) -> BucketView:
    """Refill `state` to `now`, do `op` on it (in place) and return the result."""
    spec = op.spec
    elapsed = max(0.0, now - state.stamp)
    levels = Amounts(
        *(
            min(cap, level + elapsed * rate * state.factor)
            for level, cap, rate in zip(state.levels, spec.capacities, spec.rates, strict=True)
        )
    )
    granted, wait = False, 0.0
    if op.kind == "take":
        if state.paused_until > now:
            wait = state.paused_until - now
        else:
            wait = max(
                (
                    (amount - level) / (rate * state.factor) if rate > 0 else math.inf  # a limit of 0 never refills
                    for amount, level, rate in zip(op.amounts, levels, spec.rates, strict=True)
                    if amount > level
                ),
                default=0.0,
            )
            if wait == 0.0:
                granted = True
                levels = Amounts(*(level - amount for level, amount in zip(levels, op.amounts, strict=True)))
    elif op.kind == "adjust":
        levels = Amounts(
            *(min(cap, level + amount) for level, cap, amount in zip(levels, spec.capacities, op.amounts, strict=True))
        )
    elif op.kind == "observe":
        levels = Amounts(
            *(
                level if remaining < 0 else min(level, remaining)
                for level, remaining in zip(levels, op.amounts, strict=True)
            )
        )
        state.factor = min(1.0, max(op.factor_floor, state.factor * op.factor_scale + op.factor_step))
        if op.pause > 0:
            state.paused_until = max(state.paused_until, now + op.pause)
    state.levels, state.stamp = levels, now
    return BucketView(granted, wait, levels, state.factor, max(0.0, state.paused_until - now))
