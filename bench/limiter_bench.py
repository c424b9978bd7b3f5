"""Rate limiter overhead: microseconds per acquire + reconcile, in-process and on Redis, sync and asyncio.

Limits are far above what the loop can use, so nothing ever waits: the figures are the limiter's own cost per
request (the bucket arithmetic, and for Redis one script call each for acquire and reconcile). Each pair is
timed on its own after a warm-up; the median and the 99th percentile are reported.

Run: `.venv/bin/python bench/limiter_bench.py` (Redis at `$KEEL_REDIS_URL`, else redis://127.0.0.1:6379/0;
`--help` for the knobs). Its keys live under a fresh prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid

import redis

from keel.ratelimit import Backend, Limits, LocalBackend, RateLimiter, Reservation
from keel.ratelimit.redis_backend import RedisBackend

MODEL = "claude-sonnet-5"
HUGE = Limits(requests=10**12, input_tokens=10**15, output_tokens=10**15)
RESERVATION = Reservation(MODEL, input_tokens=2_000, output_tokens=1_024)


def sync_pairs(limiter: RateLimiter, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        permit = limiter.acquire(RESERVATION)
        limiter.reconcile(permit, 1_800, 300)
        samples.append((time.perf_counter_ns() - started) / 1_000)
    return samples


async def async_pairs(limiter: RateLimiter, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        permit = await limiter.acquire_async(RESERVATION)
        await limiter.reconcile_async(permit, 1_800, 300)
        samples.append((time.perf_counter_ns() - started) / 1_000)
    return samples


def measure(backend: Backend, style: str, warmup: int, count: int) -> list[float]:
    limiter = RateLimiter(HUGE, backend=backend, name="bench")
    if style == "sync":
        sync_pairs(limiter, warmup)
        return sync_pairs(limiter, count)

    async def warm_then_timed() -> list[float]:
        await async_pairs(limiter, warmup)
        samples = await async_pairs(limiter, count)
        await limiter.aclose()  # the asyncio client belongs to this event loop
        return samples

    return asyncio.run(warm_then_timed())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="timed pairs per in-process row")
    parser.add_argument("--redis-count", type=int, default=5_000, help="timed pairs per Redis row")
    parser.add_argument("--redis-url", default=os.environ.get("KEEL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()

    prefix = f"keel-bench:{uuid.uuid4().hex}"
    redis_backend = RedisBackend(args.redis_url, prefix=prefix)
    rows = [
        ("in-process", "sync", LocalBackend(), args.count),
        ("in-process", "asyncio", LocalBackend(), args.count),
        ("redis", "sync", redis_backend, args.redis_count),
        ("redis", "asyncio", redis_backend, args.redis_count),
    ]
    print(f"python {platform.python_version()}, redis at {redis_backend.url}; µs per acquire + reconcile")
    print(f"{'backend':<12}{'style':<9}{'pairs':>8}{'median':>9}{'p99':>9}")
    try:
        for name, style, backend, count in rows:
            samples = measure(backend, style, warmup=count // 10, count=count)
            p99 = statistics.quantiles(samples, n=100)[98]
            print(f"{name:<12}{style:<9}{count:>8}{statistics.median(samples):>9.1f}{p99:>9.1f}")
    finally:
        redis_backend.close()
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main()
