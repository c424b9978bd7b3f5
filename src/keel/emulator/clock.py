"""Simulated time: the batch clock, and the clock of rate-limit buckets and prompt-cache lifetimes."""

from __future__ import annotations

import threading
import time


class Clock:
    """The wall clock at start, running `speed` times faster (0 freezes it), plus whatever `advance` added.

    `now()` is in epoch seconds, so it serves both for durations and for the timestamps the API shows.
    """

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed < 0:
            raise ValueError(f"clock speed must be >= 0, got {speed}")
        self.speed = speed
        self._start = time.time() if start is None else start
        self._monotonic = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._start + (time.monotonic() - self._monotonic) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds


BatchClock = Clock  # the batch clock's former name, still exported
