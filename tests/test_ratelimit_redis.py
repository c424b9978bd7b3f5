"""What only the Redis backend does: one budget across processes, constant-size state, and failing closed."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
import traceback
import uuid
from pathlib import Path

import pytest
import redis
from ratelimit_helpers import (
    MODEL,
    REDIS_URL,
    PrivateRedis,
    count_grants,
    delete_keys,
    redis_backend,
    redis_skip_reason,
)

from keel.ratelimit import (
    REDIS_URL_ENV,
    AcquireTimeout,
    LimiterUnavailable,
    Limits,
    LocalBackend,
    RateLimiter,
    Reservation,
    connect_backend,
)
from keel.ratelimit.redis_backend import RedisBackend

UNREACHABLE_URL = "redis://user:secret@127.0.0.1:1/0"


def test_a_bucket_set_is_one_expiring_hash_of_six_numbers_whatever_the_limits() -> None:
    with redis_backend() as backend:
        for name, size in (("small", 10), ("huge", 10**12)):
            limiter = RateLimiter(
                Limits(requests=size, input_tokens=size, output_tokens=size), backend=backend, name=name
            )
            for _ in range(3):
                limiter.reconcile(limiter.acquire(Reservation(MODEL, 5, 5)), 1, 1)
            limiter.observe(MODEL, {"retry-after": "2"}, 429)
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        for name in ("small", "huge"):
            key = f"{backend.prefix}:{name}:opus"
            assert set(client.hgetall(key)) == {"r", "i", "o", "t", "f", "p"}
            assert 2 < client.pttl(key) / 1000 <= 2 * 60 + 2 + 1  # until full at half rate, + the pause, + 1 s
        client.close()


def test_processes_sharing_redis_keep_to_one_budget_where_local_limiters_each_spend_it() -> None:
    reason = redis_skip_reason()
    if reason:
        pytest.skip(reason)
    limits = Limits(requests=10, input_tokens=10_000, output_tokens=10_000, per=1)
    seconds = 0.5
    budget = 10 + 10 * seconds  # a full bucket, then the refill
    # Workers are forked by a fresh single-threaded server that imports keel once: a spawned child would take
    # seconds to import it, and a child forked from pytest would inherit its threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["keel.ratelimit.redis_backend", "pytest"])
    start_at, ready, results = context.Value("d", 0.0), context.Queue(), context.Queue()
    prefix = f"keel-test:{uuid.uuid4().hex}"
    workers = {
        (kind, n): context.Process(target=count_grants, args=(kind, prefix, limits, seconds, start_at, ready, results))
        for kind in ("redis", "local")
        for n in range(2)
    }
    for worker in workers.values():
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        start_at.value = time.time() + 0.1
        counts: dict[str, list[int]] = {"redis": [], "local": []}
        for _ in workers:
            kind, granted = results.get(timeout=10)
            counts[kind].append(granted)
    finally:
        for worker in workers.values():
            worker.join(timeout=10)
        delete_keys(prefix)
    assert sum(counts["redis"]) <= budget, counts  # one budget for both processes
    assert all(granted >= 10 for granted in counts["local"]) and sum(counts["local"]) > budget, counts


def test_unreachable_redis_at_start_is_a_clear_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(LimiterUnavailable) as caught:
        RedisBackend(UNREACHABLE_URL)
    message = "".join(traceback.format_exception(caught.value))
    assert "redis://user:***@127.0.0.1:1/0" in message and "secret" not in message

    monkeypatch.setenv(REDIS_URL_ENV, UNREACHABLE_URL)
    with pytest.raises(LimiterUnavailable, match=r"user:\*\*\*@"):
        connect_backend()  # no silent fallback
    with caplog.at_level(logging.WARNING, logger="keel.ratelimit"):
        assert isinstance(connect_backend(fallback="local"), LocalBackend)
    assert "per-process limits" in caplog.text and "secret" not in caplog.text

    monkeypatch.delenv(REDIS_URL_ENV)
    assert isinstance(connect_backend(), LocalBackend)  # no Redis configured: in-process, as documented


def test_a_redis_lost_mid_run_makes_the_limiter_wait_never_grant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PrivateRedis(tmp_path, password="hunter2-secret")
    server.start()
    backend = RedisBackend(server.url, reconnect_for=5)
    limiter = RateLimiter(Limits(requests=100, input_tokens=10_000, output_tokens=10_000, per=1), backend=backend)
    try:
        limiter.acquire(Reservation(MODEL, 10, 10), timeout=0)
        server.kill()

        started = time.monotonic()
        with caplog.at_level(logging.DEBUG, logger="keel.ratelimit"), pytest.raises(LimiterUnavailable) as caught:
            limiter.acquire(Reservation(MODEL, 10, 10), timeout=0.3)
        assert 0.3 <= time.monotonic() - started <= 2  # retried until the caller's deadline
        assert f"default:***@127.0.0.1:{server.port}" in str(caught.value)
        assert "unreachable" in caplog.text and "hunter2" not in caplog.text + str(caught.value)

        granted: list[float] = []

        def acquire() -> None:
            limiter.acquire(Reservation(MODEL, 1, 1), timeout=5)
            granted.append(time.monotonic())

        waiter = threading.Thread(target=acquire)
        waiter.start()
        time.sleep(0.3)
        assert not granted  # still waiting: closed
        restarted = time.monotonic()
        server.start()  # empty, no persistence: full buckets again, and no script loaded
        waiter.join(timeout=5)
        assert granted and granted[0] >= restarted
        assert limiter.snapshot(MODEL).levels.requests == pytest.approx(99, abs=1)
    finally:
        limiter.close()
        server.kill()


async def test_an_asyncio_waiter_rides_out_a_redis_restart_and_is_granted_once_it_answers(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="hunter2-secret")
    server.start()
    limiter = RateLimiter(
        Limits(requests=100, input_tokens=10_000, output_tokens=10_000, per=1),
        backend=RedisBackend(server.url, reconnect_for=10),
    )
    try:
        await limiter.acquire_async(Reservation(MODEL, 10, 10), timeout=0)
        server.kill()
        waiter = asyncio.create_task(limiter.acquire_async(Reservation(MODEL, 1, 1), timeout=8))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # waiting, not granted: closed
        await asyncio.to_thread(server.start)
        permit = await asyncio.wait_for(waiter, timeout=8)
        assert permit is not None
        assert (await limiter.snapshot_async(MODEL)).levels.requests == pytest.approx(99, abs=1)
    finally:
        await limiter.aclose()
        server.kill()


def test_with_redis_down_acquiring_settling_and_observing_all_fail_closed(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="pw")
    server.start()
    backend = RedisBackend(server.url, reconnect_for=0.2)
    limiter = RateLimiter(Limits(requests=2, input_tokens=100, output_tokens=100, per=60), backend=backend)
    try:
        permit = limiter.acquire(Reservation(MODEL, 1, 1))
        limiter.acquire(Reservation(MODEL, 1, 1))
        with pytest.raises(AcquireTimeout):  # Redis up, bucket empty
            limiter.acquire(Reservation(MODEL, 1, 1), timeout=0.05)
        server.kill()
        for action in (
            lambda: limiter.acquire(Reservation(MODEL, 1, 1)),  # no timeout: bounded by reconnect_for
            lambda: limiter.observe(MODEL, {}, 200),
            permit.release,
        ):
            with pytest.raises(LimiterUnavailable):
                action()
    finally:
        limiter.close()
        server.kill()
