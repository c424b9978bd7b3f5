"""The emulator's access log: what it served, so a test can check a client saw and logged every response."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class AccessEntry:
    method: str
    path: str
    status: int
    request_id: str
    retry_count: int | None  # the SDK's x-stainless-retry-count header, when sent
    fault: str | None  # the injected fault, in the x-keel-fault syntax
    model: str | None
    stream: bool
    at: float


class AccessLog:
    """Thread-safe, append-only; `entries()` returns a snapshot."""

    def __init__(self) -> None:
        self._entries: list[AccessEntry] = []
        self._lock = threading.Lock()

    def add(
        self,
        *,
        method: str,
        path: str,
        status: int,
        request_id: str,
        retry_count: int | None,
        fault: str | None,
        model: str | None,
        stream: bool,
    ) -> None:
        entry = AccessEntry(method, path, status, request_id, retry_count, fault, model, stream, time.time())
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[AccessEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
