"""The embedded ledgers: one SQLite file each, WAL mode, each write its own committed transaction.

`SQLiteBackend` is what a ledger on SQLite needs (connecting, the schema, transactions, reads); `SQLiteLedger`
is the batch ledger on it, and `keel.bulk.RunLedger` the run ledger. A file says which kind of ledger it is
(`PRAGMA application_id`) and which schema version (`PRAGMA user_version`): another kind or version is refused
with a clear error. Opening is one transaction, so a process that opens the file while another creates it
waits, and never sees the tables without their version.

Each thread that uses a ledger gets its own connection (a runner's heartbeat renews its leases from a thread of its
own); SQLite's file lock serialises their writes (`BEGIN IMMEDIATE`, waiting up to 30 s), and those of other
processes on the same file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from .jobs import Connection, T
from .ledger import RESULT_COLUMNS, SCHEMA_VERSION, STAGE, SQLLedger

__all__ = ["SCHEMA", "SQLiteBackend", "SQLiteLedger", "job_tables"]


def job_tables(prefix: str = "") -> str:
    """The tables of every job ledger on SQLite (`keel.batch.jobs.SQLJobs`, `keel.batch.leases.SQLLeases`), their
    names starting with `prefix`; each kind adds its items table (and the lease columns of what its runners claim)."""
    return f"""
CREATE TABLE IF NOT EXISTS {prefix}jobs (
    job_id TEXT PRIMARY KEY, input_path TEXT NOT NULL, options TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS {prefix}rejects (
    job_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT, reason TEXT NOT NULL, PRIMARY KEY (job_id, line)
);
CREATE TABLE IF NOT EXISTS {prefix}runners (
    runner_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, started_at REAL NOT NULL, lease_until REAL NOT NULL
);
"""


SCHEMA = (
    job_tables()
    + """
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL, custom_id TEXT NOT NULL, line INTEGER NOT NULL, params TEXT NOT NULL,
    size INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, shard_id INTEGER,
    result_type TEXT, error_type TEXT, error_message TEXT, stop_reason TEXT, model TEXT,
    input_tokens INTEGER, output_tokens INTEGER, cache_write_5m_tokens INTEGER, cache_write_1h_tokens INTEGER,
    cache_read_tokens INTEGER,
    cost_batch REAL, cost_standard REAL, message TEXT,
    PRIMARY KEY (job_id, custom_id)
);
CREATE INDEX IF NOT EXISTS items_by_line ON items (job_id, line);
CREATE INDEX IF NOT EXISTS items_by_shard ON items (shard_id);
CREATE INDEX IF NOT EXISTS items_by_state ON items (job_id, state);
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, round INTEGER NOT NULL,
    state TEXT NOT NULL, batch_id TEXT UNIQUE, requests INTEGER NOT NULL, bytes INTEGER NOT NULL,
    submit_started_at REAL, submitted_at REAL, ended_at REAL, counts TEXT NOT NULL DEFAULT '{}',
    lease_owner TEXT, lease_until REAL
);
"""
)

_RESULTS = ", ".join(RESULT_COLUMNS)
_PLACES = ", ".join("?" * (2 + len(RESULT_COLUMNS)))  # seq, custom_id, then the result columns


class SQLiteBackend:
    """A ledger in one SQLite file: the connections, the schema, transactions and reads."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    SKIP_LOCKED = ""  # `BEGIN IMMEDIATE` serialises every writer of the file
    KIND: ClassVar[str]
    """What the ledger is called in errors ("batch ledger")."""
    APPLICATION_ID: ClassVar[int]
    """`PRAGMA application_id` of its files: tells the kinds apart."""
    SCHEMA_VERSION: ClassVar[int]
    SCHEMA: ClassVar[str]

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._create_schema()

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._guard:
                self._opened.append(conn)
        return conn

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _create_schema(self) -> None:
        """Create the tables on first use; a file of another kind or schema version is refused with a clear error."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            kind = conn.execute("PRAGMA application_id").fetchone()[0]
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone() is not None
            if exists and kind != self.APPLICATION_ID:
                raise ValueError(f"{self.path}: not a {self.KIND} (it is a file of another kind); use another path")
            if exists and version != self.SCHEMA_VERSION:
                raise ValueError(
                    f"{self.path}: a {self.KIND} of schema version {version}, written by another keel version "
                    f"(this one uses version {self.SCHEMA_VERSION}); finish its jobs with that version, or use a new "
                    "ledger"
                )
            for statement in self.SCHEMA.split(";"):  # executescript would commit first
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {self.APPLICATION_ID}")
        except BaseException:
            conn.execute("ROLLBACK")
            self.close()
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._guard:
            for conn in self._opened:
                conn.close()
            self._opened.clear()

    def _write(self, body: Callable[[Connection], T], *, again: bool = True) -> T:
        """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK` on error) on this thread's connection."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _read(self, body: Callable[[Connection], T]) -> T:
        return body(self._conn)

    def _by_line(self, sql: str, params: Callable[[int], tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        yield from self._conn.execute(sql, params(0))  # one cursor, read as it goes


class SQLiteLedger(SQLiteBackend, SQLLedger):
    """The embedded batch ledger: one SQLite file (`batches.sqlite3` under `.keel/` or `$KEEL_HOME` by default)."""

    KIND = "batch ledger"
    APPLICATION_ID = 0  # as the files of keel versions before the kinds were told apart
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = SCHEMA
    APPLY_RESULTS = (
        f"UPDATE items SET ({_RESULTS}) = (SELECT {_RESULTS} FROM temp.{STAGE} AS staged"
        " WHERE staged.custom_id = items.custom_id ORDER BY staged.seq DESC LIMIT 1)"
        f" WHERE shard_id = ? AND custom_id IN (SELECT custom_id FROM temp.{STAGE})"
    )

    def _stage_results(self, conn: Connection, rows: Iterator[tuple[Any, ...]]) -> None:
        conn.execute(f"DROP TABLE IF EXISTS temp.{STAGE}")  # rolled back with a failed call; to be sure
        conn.execute(f"CREATE TABLE temp.{STAGE} (seq INTEGER NOT NULL, custom_id TEXT NOT NULL, {_RESULTS})")
        self._conn.executemany(f"INSERT INTO temp.{STAGE} VALUES ({_PLACES})", rows)
        conn.execute(f"CREATE INDEX temp.{STAGE}_ids ON {STAGE} (custom_id)")
