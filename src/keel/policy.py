"""Retry policies: who is waiting decides how long a call may keep trying.

`interactive` — someone is waiting: the SDK's few retries inside a total deadline; a retry whose
`retry-after` would overrun the deadline is not attempted; the call fails fast with a clear error.

`background` — bulk work: after the SDK's own retries are spent on a retryable error, keel starts another
round (tenacity), with exponential backoff and full jitter, never sooner than the server's `retry-after`,
until the retry budget (minutes) is spent. 429/529 storms are ridden out instead of failing the job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    name: str
    max_retries: int  # the SDK's own retries per round
    timeout: float  # per attempt, seconds (the SDK's request timeout)
    deadline: float | None = None  # the whole call, seconds
    budget: float | None = None  # keel's rounds on top of the SDK's retries, seconds
    backoff_base: float = 1.0  # keel's rounds: full jitter in [0, min(cap, base * 2**round)]
    backoff_cap: float = 60.0


INTERACTIVE = RetryPolicy("interactive", max_retries=2, timeout=60.0, deadline=60.0)
BACKGROUND = RetryPolicy("background", max_retries=4, timeout=600.0, budget=900.0)
POLICIES = {policy.name: policy for policy in (INTERACTIVE, BACKGROUND)}


def policy_named(policy: str | RetryPolicy) -> RetryPolicy:
    if isinstance(policy, RetryPolicy):
        return policy
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(f"policy: expected one of {', '.join(POLICIES)} or a RetryPolicy, got {policy!r}") from None
