"""The Redis the benchmarks use (`$KEEL_REDIS_URL`, else redis://127.0.0.1:6379/0): whether it answers, and a key
prefix of a run's own, deleted afterwards. Only the address without its password is ever printed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from keel import LimiterUnavailable
from keel.ratelimit.redis_backend import RedisBackend

REDIS_URL = os.environ.get("KEEL_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(url: str = REDIS_URL) -> str | None:
    """Why Redis cannot be used (None: it answers), the URL without its password."""
    try:
        RedisBackend(url).close()
    except LimiterUnavailable as exc:
        return str(exc)
    return None


@contextmanager
def scratch_prefix(label: str, url: str = REDIS_URL) -> Iterator[str]:
    """A fresh key prefix, `keel-bench:<label>:<random>`; every key under it is deleted on the way out."""
    prefix = f"keel-bench:{label}:{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
