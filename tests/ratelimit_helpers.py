"""Helpers for the rate-limiter tests: the machine's Redis (each test under its own key prefix, removed
afterwards), a private redis-server to stop and restart, the worker of the two-process tests, and a clock the
test sets for a LocalBackend."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from keel import LimiterUnavailable
from keel.emulator.server import free_port
from keel.ratelimit import Backend, Limits, LocalBackend, RateLimiter, Reservation
from keel.ratelimit.redis_backend import RedisBackend

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MODEL = "claude-opus-5"


class Clock:
    """The time a `LocalBackend(clock)` reads, set by the test (it starts at 0)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@functools.cache
def redis_skip_reason() -> str | None:
    """Why the Redis tests cannot run here (None: they can)."""
    try:
        RedisBackend(REDIS_URL, connect_timeout=0.5).close()
    except LimiterUnavailable as exc:
        return f"{exc}; `make test` starts one with scripts/services.sh, which says why not"
    return None


@contextmanager
def redis_backend(**options: Any) -> Iterator[RedisBackend]:
    """A backend on the machine's Redis under a key prefix of its own; its keys are deleted afterwards."""
    reason = redis_skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"keel-test:{uuid.uuid4().hex}"
    backend = RedisBackend(REDIS_URL, prefix=prefix, **options)
    try:
        yield backend
    finally:
        backend.close()
        delete_keys(prefix)


def delete_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of the test's own (password required; no persistence unless `persistent`: then an
    append-only file fsynced on every write, in `workdir`), to kill and start again."""

    def __init__(self, workdir: Path, password: str, *, persistent: bool = False) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (scripts/services.sh installs it when run as root)")
        self.port = free_port()
        self.password = password
        self.workdir = workdir
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://default:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", *args, "--requirepass", self.password],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def count_grants(
    kind: str, prefix: str, limits: Limits, seconds: float, start_at: Any, ready: Any, results: Any
) -> None:
    """Worker of the two-process tests: say it is ready, wait for `start_at.value` (wall-clock time, common to
    the processes, set once all are ready), then acquire as fast as the limiter lets it for `seconds` and report
    how many reservations were granted within that window, as `(kind, count)`."""
    backend: Backend = RedisBackend(REDIS_URL, prefix=prefix) if kind == "redis" else LocalBackend()
    limiter = RateLimiter(limits, backend=backend, name="shared")
    ready.put(None)
    while start_at.value == 0:
        time.sleep(0.005)
    time.sleep(max(0.0, start_at.value - time.time()))
    end = start_at.value + seconds
    granted = 0
    while (left := end - time.time()) > 0:
        try:
            limiter.acquire(Reservation(MODEL, 10, 10), timeout=left)
        except TimeoutError:
            break
        if time.time() <= end:
            granted += 1
    limiter.close()
    results.put((kind, granted))
