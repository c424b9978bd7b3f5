"""In-process tool-call store: a dict behind a lock. For tests and single-process programs.

Nothing survives the process, so it deduplicates retries inside one run only; use `SQLiteStore` (the
default) when a restarted program must not repeat a side effect.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from .base import Claim, Status, ToolCallRecord


class MemoryStore:
    """Thread-safe, not shared across processes."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._rows: dict[str, ToolCallRecord] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, key: str, *, tool: str, owner: str, lease: float, takeover: bool = False) -> Claim:
        with self._lock:
            now = self._clock()
            row = self._rows.get(key)
            if row is None:
                new = ToolCallRecord(key, tool, "claimed", owner, 1, None, now, now + lease, None)
                self._rows[key] = new
                return Claim(True, new)
            if takeover and row.expired(now):
                new = dataclasses.replace(
                    row, owner=owner, attempt=row.attempt + 1, claimed_at=now, expires_at=now + lease
                )
                self._rows[key] = new
                return Claim(True, new, previous=row)
            return Claim(False, row, expired=row.expired(now))

    def complete(self, key: str, *, owner: str, result_json: str, status: Status = "done") -> bool:
        with self._lock:
            row = self._rows.get(key)
            if row is None or row.owner != owner or row.status != "claimed":
                return False
            self._rows[key] = dataclasses.replace(
                row, status=status, result_json=result_json, completed_at=self._clock()
            )
            return True

    def release(self, key: str, *, owner: str) -> bool:
        with self._lock:
            row = self._rows.get(key)
            if row is None or row.owner != owner:
                return False
            del self._rows[key]
            return True

    def renew(self, key: str, *, owner: str, lease: float) -> bool:
        with self._lock:
            row = self._rows.get(key)
            if row is None or row.owner != owner or row.status != "claimed":
                return False
            self._rows[key] = dataclasses.replace(row, expires_at=self._clock() + lease)
            return True

    def get(self, key: str) -> ToolCallRecord | None:
        with self._lock:
            return self._rows.get(key)

    def close(self) -> None:
        """Nothing to release; here so both embedded stores close the same way."""
