"""Helpers for the tool-store tests: each backend under test as a `Kit` (the store, how to open it again, how
its time moves), on the machine's Redis under a key prefix of its own, removed afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from ratelimit_helpers import REDIS_URL, delete_keys, redis_skip_reason

from keel.stores import MemoryStore, RedisStore, SQLiteStore, ToolCallStore


class Clock:
    """A clock the test moves, for lease expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Kit:
    """A store under test. `target` is what another process opens the same store with (a file, or a Redis
    prefix); `tick` the seconds of one lease unit the clocked tests count in: 1 on a clock the test moves, a
    fraction of a second where time is real (Redis: the server's clock and key expiry)."""

    kind: str
    store: ToolCallStore
    target: str
    clock: Clock | None = None

    @property
    def tick(self) -> float:
        return 1.0 if self.clock is not None else 0.3

    def advance(self, ticks: float) -> None:
        if self.clock is not None:
            self.clock.now += ticks * self.tick
        else:
            time.sleep(ticks * self.tick)

    def now(self) -> float:
        return self.clock.now if self.clock is not None else time.time()

    def reopen(self) -> ToolCallStore:
        """Another store object on the same state, as a restarted program would open it."""
        return open_store(self.kind, self.target)


def open_store(kind: str, target: str) -> SQLiteStore | RedisStore:
    return SQLiteStore(target) if kind == "sqlite" else RedisStore(REDIS_URL, prefix=target)


@contextmanager
def kit(kind: str, tmp_path: Path, *, clocked: bool = False) -> Iterator[Kit]:
    """A fresh store of `kind` ("sqlite", "redis" or "memory"); with `clocked`, on a clock the test moves where
    the backend allows it (not Redis, whose time is the server's)."""
    clock = Clock() if clocked else None
    if kind == "memory":
        yield Kit(kind, MemoryStore(clock=clock) if clock else MemoryStore(), "", clock)
    elif kind == "sqlite":
        path = str(tmp_path / "keel" / "tools.sqlite3")
        store = SQLiteStore(path, clock=clock) if clock else SQLiteStore(path)
        yield Kit(kind, store, path, clock)
        store.close()
    else:
        reason = redis_skip_reason()
        if reason:
            pytest.skip(reason)
        prefix = f"keel-test:tools:{uuid.uuid4().hex}"
        store = RedisStore(REDIS_URL, prefix=prefix)
        try:
            yield Kit(kind, store, prefix)
        finally:
            store.close()
            delete_keys(prefix)


def dump(made: Kit) -> str:
    """Everything a store holds, as text: the SQLite file's bytes, or every key and value under the prefix."""
    if made.kind == "sqlite":
        return Path(made.target).read_bytes().decode("utf-8", "replace")
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{made.target}:*"))
        return "\n".join(f"{key} {client.hgetall(key) if key.endswith('}') else client.get(key)}" for key in keys)
    finally:
        client.close()
