"""What every job ledger keeps: its jobs, their input items and rejected lines, in one SQLite file.

The batch ledger (`keel.batch.SQLiteLedger`) and the bulk run ledger (`keel.bulk.RunLedger`) build on
`SQLiteJobs`: each adds the columns and states of its own items (and the batch ledger its shards). A file
says which kind of ledger it is (`PRAGMA application_id`) and which schema version (`PRAGMA user_version`);
another kind or version is refused with a clear error. Opening is one transaction, so a process that opens
the file while another creates it waits, and never sees the tables without their version.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .._budget import CostEstimate, estimate_cost
from .._pricing import PriceTable
from .inputs import Defaults, Item, Reject, accepted_items

JOB_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, input_path TEXT NOT NULL, options TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    job_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT, reason TEXT NOT NULL, PRIMARY KEY (job_id, line)
);
"""
"""The tables every kind of ledger has; each kind adds its `items` table (job_id, custom_id, line, params, size,
state, attempts, then its own result columns)."""

_PAGE = 500  # open items are read this many at a time


@dataclass(frozen=True)
class Job:
    """A job as the ledger holds it.

    Attributes:
        job_id: derived from the input file and the defaults: the same run resumes the same job.
        input_path: the input file.
        options: the defaults the job was made with.
        status: new / prepared / running / stopped (by its budget) / done, and for batch jobs canceling / canceled.
        created_at: when it was made (Unix time).
    """

    job_id: str
    input_path: str
    options: dict[str, Any]
    status: str
    created_at: float


class SQLiteJobs:
    """A ledger in one SQLite file, WAL mode, each write its own committed transaction."""

    KIND: ClassVar[str]
    """What the ledger is called in errors ("batch ledger")."""
    APPLICATION_ID: ClassVar[int]
    """`PRAGMA application_id` of its files: tells the kinds apart."""
    SCHEMA_VERSION: ClassVar[int]
    SCHEMA: ClassVar[str]
    """Its own tables, beside `JOB_SCHEMA`."""
    FINAL_STATES: ClassVar[tuple[str, ...]]
    """Item states that are the item's result; the others are work left."""
    RESULT_COLUMNS: ClassVar[tuple[str, ...]]
    """The item columns `items_in_order` gives besides line, custom_id, state, status and attempts."""
    STATUS: ClassVar[str]
    """SQL: an item's status in the results file, from its state (and attempts); "unsent" for one never sent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._create_schema()
        self._lock = threading.RLock()
        self._job_for_ids: str | None = None

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
            for statement in (JOB_SCHEMA + self.SCHEMA).split(";"):  # executescript would commit first
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id = {self.APPLICATION_ID}")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    # --- jobs ------------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        row = self._conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return Job(row["job_id"], row["input_path"], json.loads(row["options"]), row["status"], row["created_at"])

    def jobs(self) -> list[Job]:
        ids = [row[0] for row in self._conn.execute("SELECT job_id FROM jobs ORDER BY created_at")]
        return [job for job in (self.job(job_id) for job_id in ids) if job is not None]

    def create_job(self, job_id: str, input_path: str, options: dict[str, Any]) -> Job:
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, 'new', ?, ?)",
                (job_id, input_path, json.dumps(options, sort_keys=True), now, now),
            )
        job = self.job(job_id)
        assert job is not None
        return job

    def set_job_status(self, job_id: str, status: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE jobs SET status = ?, updated_at = ? WHERE job_id = ?", (status, time.time(), job_id))

    # --- inputs ----------------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        """Whether the job being prepared already has this custom_id (`add_inputs` sets the job)."""
        row = self._conn.execute(
            "SELECT 1 FROM items WHERE job_id = ? AND custom_id = ?", (self._job_for_ids, key)
        ).fetchone()
        return row is not None

    def add_inputs(self, job_id: str, lines: Iterable[Item | Reject]) -> tuple[int, int]:
        """Record every accepted item and reject of a job in one transaction; returns (accepted, rejected)."""
        accepted = rejected = 0
        self._job_for_ids = job_id
        with self._tx() as conn:
            for entry in lines:
                if isinstance(entry, Item):
                    conn.execute(
                        "INSERT INTO items (job_id, custom_id, line, params, size, state)"
                        " VALUES (?, ?, ?, ?, ?, 'pending')",
                        (job_id, entry.custom_id, entry.line, entry.params_json, entry.size),
                    )
                    accepted += 1
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO rejects VALUES (?, ?, ?, ?)",
                        (job_id, entry.line, entry.custom_id, entry.reason),
                    )
                    rejected += 1
            conn.execute("UPDATE jobs SET status = 'prepared', updated_at = ? WHERE job_id = ?", (time.time(), job_id))
        return accepted, rejected

    def open_items(self, job_id: str) -> Iterator[Item]:
        """The job's items without a final state, in input order, read a page at a time (the caller may change
        their states meanwhile)."""
        finals = ", ".join("?" * len(self.FINAL_STATES))
        line = 0
        while True:
            rows = self._conn.execute(
                f"SELECT line, custom_id, params FROM items WHERE job_id = ? AND line > ? AND state NOT IN ({finals})"
                " ORDER BY line LIMIT ?",
                (job_id, line, *self.FINAL_STATES, _PAGE),
            ).fetchall()
            for row in rows:
                yield Item(row[0], row[1], row[2])
            if len(rows) < _PAGE:
                return
            line = rows[-1][0]

    # --- reading back ----------------------------------------------------------------------------

    def items_in_order(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Every input line of the job, accepted or rejected, in input order, one row at a time: its line, custom_id,
        state, status, attempts, `RESULT_COLUMNS` and (for a rejected line) reason."""
        cursor = self._conn.cursor()
        cursor.row_factory = None  # plain tuples, zipped with the names below: faster than dict(sqlite3.Row)
        columns = ", ".join(self.RESULT_COLUMNS)
        nulls = ", ".join("NULL" for _ in self.RESULT_COLUMNS)
        cursor.execute(
            f"SELECT line, custom_id, state, {self.STATUS} AS status, attempts, {columns}, NULL AS reason FROM items"
            f" WHERE job_id = ? UNION ALL SELECT line, custom_id, 'rejected', 'rejected', 0, {nulls}, reason"
            " FROM rejects WHERE job_id = ?"
            " ORDER BY line",
            (job_id, job_id),
        )
        names = [column[0] for column in cursor.description]
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    def state_counts(self, job_id: str) -> dict[str, int]:
        counts = {
            row[0]: row[1]
            for row in self._conn.execute(
                "SELECT state, COUNT(*) FROM items WHERE job_id = ? GROUP BY state", (job_id,)
            )
        }
        rejected = self._conn.execute("SELECT COUNT(*) FROM rejects WHERE job_id = ?", (job_id,)).fetchone()[0]
        if rejected:
            counts["rejected"] = rejected
        return counts


class JobItems(Protocol):
    def job(self, job_id: str) -> Job | None: ...
    def open_items(self, job_id: str) -> Iterator[Item]: ...


def estimate_left(
    ledger: JobItems | None,
    job_id: str,
    path: Path,
    defaults: Defaults,
    max_request_bytes: int,
    prices: PriceTable | None,
    *,
    batch: bool,
) -> CostEstimate:
    """The pre-flight estimate of what a run of the job would still send: the ledger's open items once the job is in
    it, else every accepted line of the input file (read without recording anything)."""
    job = None if ledger is None else ledger.job(job_id)
    if ledger is not None and job is not None and job.status != "new":
        items = ledger.open_items(job_id)
    else:
        items = accepted_items(path, defaults, max_request_bytes)
    return estimate_cost((item.params_json for item in items), prices, batch=batch)


class _Transaction:
    """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK` on error), serialised within the process."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()
