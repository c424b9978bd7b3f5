"""Rate limiter overhead: microseconds per acquire + settle, in-process and on Redis, sync and asyncio.

Limits are far above what the loop can use, so nothing ever waits: the figures are the limiter's own cost per
request (the bucket arithmetic, and for Redis one script call each for acquire and reconcile). Each cycle is
timed on its own after a warm-up; the median and the 99th percentile are reported. Two cycles:

- acquire + reconcile: what `RateLimiter.reserve` and `permit.reconcile` cost;
- acquire + reconcile + observe: what `keel.Client(limiter=...)` does for each successful call (the third step
  reads a response's `anthropic-ratelimit-*` headers, one more script call on Redis).

Run: `.venv/bin/python bench/limiter_bench.py` (Redis at `$KEEL_REDIS_URL`, else redis://127.0.0.1:6379/0;
`--help` for the knobs). Its keys live under a fresh prefix and are deleted afterwards. Without a Redis, its rows
are skipped ("info").
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections.abc import Callable

import bench_redis
from targets import Result, add_arguments, finish, info, note

from keel.ratelimit import Backend, Limits, LocalBackend, RateLimiter, Reservation, redact_url

MODEL = "claude-sonnet-5"
HUGE = Limits(requests=10**12, input_tokens=10**15, output_tokens=10**15)
RESERVATION = Reservation(MODEL, input_tokens=2_000, output_tokens=1_024)
HEADERS = {  # a response's rate-limit headers, as the API sends them
    "anthropic-ratelimit-requests-limit": str(10**12),
    "anthropic-ratelimit-requests-remaining": str(10**12 - 1),
    "anthropic-ratelimit-input-tokens-limit": str(10**15),
    "anthropic-ratelimit-input-tokens-remaining": str(10**15 - 1_000),
    "anthropic-ratelimit-output-tokens-limit": str(10**15),
    "anthropic-ratelimit-output-tokens-remaining": str(10**15 - 1_000),
    "anthropic-ratelimit-tokens-limit": str(2 * 10**15),
    "anthropic-ratelimit-tokens-remaining": str(2 * 10**15 - 2_000),
    "request-id": "req_011Cbenchbenchbenchbench",
}


def sync_cycles(limiter: RateLimiter, count: int, observe: bool) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        permit = limiter.acquire(RESERVATION)
        limiter.reconcile(permit, 1_800, 300)
        if observe:
            limiter.observe(MODEL, HEADERS)
        samples.append((time.perf_counter_ns() - started) / 1_000)
    return samples


async def async_cycles(limiter: RateLimiter, count: int, observe: bool) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        permit = await limiter.acquire_async(RESERVATION)
        await limiter.reconcile_async(permit, 1_800, 300)
        if observe:
            await limiter.observe_async(MODEL, HEADERS)
        samples.append((time.perf_counter_ns() - started) / 1_000)
    return samples


def measure(backend: Backend, style: str, observe: bool, warmup: int, count: int) -> list[float]:
    limiter = RateLimiter(HUGE, backend=backend, name="bench")
    if style == "sync":
        sync_cycles(limiter, warmup, observe)
        return sync_cycles(limiter, count, observe)

    async def warm_then_timed() -> list[float]:
        await async_cycles(limiter, warmup, observe)
        samples = await async_cycles(limiter, count, observe)
        await limiter.aclose()  # the asyncio client belongs to this event loop
        return samples

    return asyncio.run(warm_then_timed())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="timed cycles per in-process row")
    parser.add_argument("--redis-count", type=int, default=5_000, help="timed cycles per Redis row")
    add_arguments(parser)
    args = parser.parse_args(argv)

    skipped = bench_redis.unavailable()
    print(f"python {platform.python_version()}, redis: {skipped or redact_url(bench_redis.REDIS_URL)}")
    print(f"{'backend':<12}{'style':<9}{'cycle':<32}{'cycles':>8}{'median µs':>11}{'p99 µs':>9}")
    results: list[Result] = []

    def rows(name: str, make: Callable[[], Backend], count: int) -> None:
        for observe in (False, True):
            cycle = "acquire + reconcile" + (" + observe" if observe else "")
            for style in ("sync", "asyncio"):
                backend = make()
                try:
                    samples = measure(backend, style, observe, warmup=count // 10, count=count)
                finally:
                    backend.close()
                median, p99 = statistics.median(samples), statistics.quantiles(samples, n=100)[98]
                print(f"{name:<12}{style:<9}{cycle:<32}{count:>8}{median:>11.1f}{p99:>9.1f}")
                results.append(info(f"{name} {style}, {cycle}", median, "µs", 1))

    rows("in-process", LocalBackend, args.count)
    if skipped:
        results.append(note("redis", f"skipped: {skipped}"))
    else:
        from keel.ratelimit.redis_backend import RedisBackend

        with bench_redis.scratch_prefix("limiter") as prefix:
            rows("redis", lambda: RedisBackend(bench_redis.REDIS_URL, prefix=prefix), args.redis_count)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
