"""The embedded default tool-call store: one SQLite file (stdlib `sqlite3`), shared by every thread and
process on the machine that opens the same path.

How it stays correct under concurrency:
- WAL journal, so readers (the waiters polling `get`) never block the writer.
- Every write runs in `BEGIN IMMEDIATE`: the write lock is taken before the row is read, so the
  read-decide-write of `claim` is one atomic step across processes, and WAL's "snapshot went stale"
  error (which the busy handler does not retry) cannot happen.
- `busy_timeout` makes a process wait for the lock instead of failing with "database is locked".
- One connection per process, used by one thread at a time under a lock, opened lazily and re-opened
  after a fork.
- `synchronous=FULL`: a claim is on disk before the side effect starts, even across a power cut.

Not for network filesystems (NFS, SMB): SQLite's locking is unreliable there. Use a shared backend.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from .base import Claim, Status, ToolCallRecord
from .home import ensure_home, keel_home

DEFAULT_FILENAME = "tools.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_tool_calls (
    key          TEXT PRIMARY KEY,
    tool         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('claimed', 'done', 'error')),
    owner        TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    result_json  TEXT,
    claimed_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    completed_at REAL
)
"""
_COLUMNS = "key, tool, status, owner, attempt, result_json, claimed_at, expires_at, completed_at"

_T = TypeVar("_T")


def _record(row: tuple[Any, ...]) -> ToolCallRecord:
    return ToolCallRecord(*row)


class SQLiteStore:
    """`ToolCallStore` on a SQLite file. `path=None`: `<keel_home()>/tools.sqlite3` (`.keel/` in the
    current directory unless `KEEL_HOME` moves it). Nothing touches the disk until the first call."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path) if path is not None else keel_home() / DEFAULT_FILENAME
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        self._closed = False

    # -- connections -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The process's one connection, held under the store's lock for the duration of the block.

        One connection per process rather than per thread: threads come and go (every long tool call has a
        lease-renewing thread), and a per-thread connection would leak a file handle each time. SQLite
        serialises writers anyway, so the lock costs little; readers of other processes are not blocked.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"SQLiteStore({str(self.path)!r}) is closed")
            pid = os.getpid()
            if self._conn is None or self._conn_pid != pid:
                # After a fork the inherited connection is the parent's (SQLite forbids using it
                # across a fork): open our own.
                self._conn = self._open()
                self._conn_pid = pid
            yield self._conn

    def _open(self) -> sqlite3.Connection:
        ensure_home(self.path.parent)
        # isolation_level=None: no implicit transactions; every write opens its own BEGIN IMMEDIATE.
        # check_same_thread=False: the connection moves between threads, always under self._lock.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        # Several processes may open a new file at the same moment; switching to WAL can report
        # "database is locked" without going through the busy handler, so retry until busy_timeout.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(_SCHEMA)
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS keel_tool_calls_completed ON keel_tool_calls (completed_at)"
                    )
                    (version,) = conn.execute("PRAGMA user_version").fetchone()
                    if version == 0:
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    elif version != SCHEMA_VERSION:
                        raise RuntimeError(
                            f"{self.path}: tool-call store schema version {version}, this keel expects {SCHEMA_VERSION}"
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _write(self, body: Callable[[sqlite3.Connection, float], _T]) -> _T:
        """Run `body(conn, now)` in a `BEGIN IMMEDIATE` transaction; `now` is read after the lock is held."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn, self._clock())
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # -- ToolCallStore -----------------------------------------------------------------------------

    def claim(self, key: str, *, tool: str, owner: str, lease: float, takeover: bool = False) -> Claim:
        def body(conn: sqlite3.Connection, now: float) -> Claim:
            row = conn.execute(f"SELECT {_COLUMNS} FROM keel_tool_calls WHERE key = ?", (key,)).fetchone()
            if row is None:
                new = ToolCallRecord(key, tool, "claimed", owner, 1, None, now, now + lease, None)
                conn.execute(
                    f"INSERT INTO keel_tool_calls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new.key, new.tool, new.status, new.owner, new.attempt, None, now, now + lease, None),
                )
                return Claim(True, new)
            existing = _record(row)
            if takeover and existing.expired(now):
                conn.execute(
                    "UPDATE keel_tool_calls SET owner = ?, attempt = attempt + 1, claimed_at = ?, expires_at = ? "
                    "WHERE key = ?",
                    (owner, now, now + lease, key),
                )
                new = ToolCallRecord(
                    key, existing.tool, "claimed", owner, existing.attempt + 1, None, now, now + lease, None
                )
                return Claim(True, new, previous=existing)
            return Claim(False, existing, expired=existing.expired(now))

        return self._write(body)

    def complete(self, key: str, *, owner: str, result_json: str, status: Status = "done") -> bool:
        if status not in ("done", "error"):
            raise ValueError(f"complete() records 'done' or 'error', not {status!r}")
        return self._write(
            lambda conn, now: (
                conn.execute(
                    "UPDATE keel_tool_calls SET status = ?, result_json = ?, completed_at = ? "
                    "WHERE key = ? AND owner = ? AND status = 'claimed'",
                    (status, result_json, now, key, owner),
                ).rowcount
                == 1
            )
        )

    def release(self, key: str, *, owner: str) -> bool:
        return self._write(
            lambda conn, now: (
                conn.execute("DELETE FROM keel_tool_calls WHERE key = ? AND owner = ?", (key, owner)).rowcount == 1
            )
        )

    def renew(self, key: str, *, owner: str, lease: float) -> bool:
        return self._write(
            lambda conn, now: (
                conn.execute(
                    "UPDATE keel_tool_calls SET expires_at = ? WHERE key = ? AND owner = ? AND status = 'claimed'",
                    (now + lease, key, owner),
                ).rowcount
                == 1
            )
        )

    def get(self, key: str) -> ToolCallRecord | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM keel_tool_calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else _record(cast(tuple[Any, ...], row))

    # -- housekeeping ------------------------------------------------------------------------------

    def purge(self, *, completed_before: float) -> int:
        """Delete finished rows (done/error) completed before this unix time; returns how many. Rows only
        ever grow otherwise. A purged key runs again if its tool call ever comes back, so keep rows at
        least as long as a conversation can be retried or replayed."""
        return self._write(
            lambda conn, now: (
                conn.execute(
                    "DELETE FROM keel_tool_calls WHERE status != 'claimed' AND completed_at < ?", (completed_before,)
                ).rowcount
            )
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection. Later calls raise."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._conn_pid == os.getpid():
                conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"
