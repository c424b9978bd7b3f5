"""The emulator's access log: what it served, so a test can check a client saw and logged every response.

In memory (`entries()`), and with a path also as a file of JSON lines, one per request, written as it is served
(`keel emulator serve --access-log FILE`). The API key appears only as its fingerprint (`key_id`), never itself.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, Protocol, TextIO, TypeVar


def stamp(at: float) -> str:
    """A time as the log files write it: RFC 3339 in UTC, with milliseconds."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    key_id: str | None = None  # a fingerprint of the API key sent (keys.key_id), when one was

    def to_json(self) -> str:
        """The entry as one line of the access-log file, its time in RFC 3339 with milliseconds."""
        fields = asdict(self)
        at = fields.pop("at")
        return json.dumps({"time": stamp(at), **fields}, separators=(",", ":"))


class LogEntry(Protocol):
    def to_json(self) -> str: ...


E = TypeVar("E", bound=LogEntry)


class JsonLinesLog(Generic[E]):
    """Thread-safe, append-only; `entries()` returns a snapshot. With `path`, each entry is also a line there."""

    def __init__(self, path: Path | None = None) -> None:
        self._entries: list[E] = []
        self._lock = threading.Lock()
        self._file: TextIO | None = path.open("a", encoding="utf-8", buffering=1) if path is not None else None

    def append(self, entry: E) -> None:
        with self._lock:
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(entry.to_json() + "\n")

    def entries(self) -> list[E]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget the entries kept in memory (the file keeps its lines)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Close the file, if any; later entries are kept in memory only."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class AccessLog(JsonLinesLog[AccessEntry]):
    """The emulator's access log: one `AccessEntry` per request served."""

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
        key_id: str | None,
    ) -> None:
        self.append(
            AccessEntry(method, path, status, request_id, retry_count, fault, model, stream, time.time(), key_id)
        )
