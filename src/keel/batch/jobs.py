"""What every job ledger keeps: its jobs, their input items and rejected lines, and the rows of its results file.

The batch ledger (`keel.batch.SQLLedger`) and the bulk run ledger (`keel.bulk.RunLedger`) build on `SQLJobs`:
each adds the columns and states of its own items (and the batch ledger its shards). The logic is SQL that SQLite
and PostgreSQL both run; a backend (`keel.batch.sqlite_ledger.SQLiteBackend`, `keel.batch.postgres`) only
connects, runs transactions and streams rows in input order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from .._budget import CostEstimate, estimate_cost
from .._pricing import PriceTable
from .inputs import Defaults, Item, Reject, accepted_items

T = TypeVar("T")

JOB_COLUMNS = "job_id, input_path, options, status, created_at"
_PAGE = 500  # open items read at a time


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


class Connection(Protocol):
    """What the ledger's SQL runs on: `sqlite3.Connection`, or a PostgreSQL connection taking `?` placeholders."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...


class SQLJobs:
    """A ledger's jobs, input items and rejects, once for every SQL backend. A backend says how to run a transaction
    (`_write`), a read (`_read`) and rows in input order (`_by_line`); a kind of ledger says what its items hold."""

    PREFIX: ClassVar[str] = ""
    """What the names of its tables start with: a kind of ledger's tables can share a database with another's."""
    FINAL_STATES: ClassVar[tuple[str, ...]]
    """Item states that are the item's result; the others are work left."""
    ROW_COLUMNS: ClassVar[tuple[str, ...]]
    """The item columns `items_in_order` gives besides line, custom_id, state, status and attempts."""
    STATUS: ClassVar[str]
    """SQL: an item's status in the results file, from its state (and attempts); "unsent" for one never sent."""

    where: str
    """Where the ledger lives, safe to print: a file's path, or a URL without its password."""

    _job_for_ids: str | None = None
    _adding: Connection | None = None

    # --- what a backend provides -------------------------------------------------------------------

    def _write(self, body: Callable[[Connection], T], *, again: bool = True) -> T:
        """`body(connection)` in one write transaction. `again=False`: the body consumes an iterator, so a backend
        that retries lost connections must not run it a second time."""
        raise NotImplementedError

    def _read(self, body: Callable[[Connection], T]) -> T:
        """`body(connection)`, reading."""
        raise NotImplementedError

    def _by_line(self, sql: str, params: Callable[[int], tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql`, ordered by its first column (an input line number), whose parameters for rows
        after line N are `params(N)`; streamed, not loaded at once."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- jobs ------------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        sql = f"SELECT {JOB_COLUMNS} FROM {self.PREFIX}jobs WHERE job_id = ?"
        row = self._read(lambda conn: conn.execute(sql, (job_id,)).fetchone())
        if row is None:
            return None
        return Job(row[0], row[1], json.loads(row[2]), row[3], row[4])

    def jobs(self) -> list[Job]:
        sql = f"SELECT {JOB_COLUMNS} FROM {self.PREFIX}jobs ORDER BY created_at"
        rows = self._read(lambda conn: conn.execute(sql).fetchall())
        return [Job(row[0], row[1], json.loads(row[2]), row[3], row[4]) for row in rows]

    def create_job(self, job_id: str, input_path: str, options: dict[str, Any]) -> Job:
        now = time.time()
        self._write(
            lambda conn: conn.execute(
                f"INSERT INTO {self.PREFIX}jobs VALUES (?, ?, ?, 'new', ?, ?) ON CONFLICT DO NOTHING",
                (job_id, input_path, json.dumps(options, sort_keys=True), now, now),
            )
        )
        job = self.job(job_id)
        assert job is not None
        return job

    def set_job_status(self, job_id: str, status: str) -> None:
        self._write(
            lambda conn: conn.execute(
                f"UPDATE {self.PREFIX}jobs SET status = ?, updated_at = ? WHERE job_id = ?",
                (status, time.time(), job_id),
            )
        )

    # --- inputs ----------------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        """Whether the job being prepared already has this custom_id (`add_inputs` sets the job). Asked in
        `add_inputs`' own transaction, which sees the items it has added so far."""
        sql, params = f"SELECT 1 FROM {self.PREFIX}items WHERE job_id = ? AND custom_id = ?", (self._job_for_ids, key)
        if self._adding is not None:
            return self._adding.execute(sql, params).fetchone() is not None
        return self._read(lambda conn: conn.execute(sql, params).fetchone()) is not None

    def add_inputs(self, job_id: str, lines: Iterable[Item | Reject]) -> tuple[int, int]:
        """Record every accepted item and reject of a new job in one transaction, and the job is `prepared`; returns
        (accepted, rejected). A job that is not new any more (another runner prepared it first) is left as it is:
        (0, 0). The job's row is locked first, so a second runner preparing it meanwhile waits, then does nothing.

        A backend that retries a transaction can do so here only if `lines` can be iterated again (a list, or
        an object whose `__iter__` reads the input afresh); from an iterator, a lost connection is raised."""
        self._job_for_ids = job_id

        def body(conn: Connection) -> tuple[int, int]:
            prepared = conn.execute(
                f"UPDATE {self.PREFIX}jobs SET status = 'prepared', updated_at = ? WHERE job_id = ? AND status = 'new'",
                (time.time(), job_id),
            )
            if not prepared.rowcount:
                return 0, 0
            accepted = rejected = 0
            self._adding = conn
            try:
                for entry in lines:
                    if isinstance(entry, Item):
                        conn.execute(
                            f"INSERT INTO {self.PREFIX}items (job_id, custom_id, line, params, size, state)"
                            " VALUES (?, ?, ?, ?, ?, 'pending')",
                            (job_id, entry.custom_id, entry.line, entry.params_json, entry.size),
                        )
                        accepted += 1
                    else:
                        conn.execute(
                            f"INSERT INTO {self.PREFIX}rejects VALUES (?, ?, ?, ?) ON CONFLICT (job_id, line)"
                            " DO UPDATE SET custom_id = excluded.custom_id, reason = excluded.reason",
                            (job_id, entry.line, entry.custom_id, entry.reason),
                        )
                        rejected += 1
            finally:
                self._adding = None
            return accepted, rejected

        return self._write(body, again=iter(lines) is not lines)  # an iterator is consumed as it goes

    def open_items(self, job_id: str) -> Iterator[Item]:
        """The job's items without a final state, in input order, read a page at a time: the caller may change their
        states meanwhile (each page is a query of its own, after the last line read)."""
        finals = ", ".join("?" * len(self.FINAL_STATES))
        sql = (
            f"SELECT line, custom_id, params FROM {self.PREFIX}items WHERE job_id = ? AND line > ?"
            f" AND state NOT IN ({finals}) ORDER BY line LIMIT ?"
        )
        after = 0
        while True:
            rows = self._read(partial(_fetch_all, sql, (job_id, after, *self.FINAL_STATES, _PAGE)))
            for line, custom_id, item_params in rows:
                yield Item(line, custom_id, item_params)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    # --- reading back ----------------------------------------------------------------------------

    def items_in_order(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Every input line of the job, accepted or rejected, in input order, one row at a time: its line, custom_id,
        state, status, attempts, `ROW_COLUMNS` and (for a rejected line) reason."""
        columns = ", ".join(self.ROW_COLUMNS)
        nulls = ", ".join("NULL" for _ in self.ROW_COLUMNS)
        sql = (
            f"SELECT line, custom_id, state, {self.STATUS} AS status, attempts, {columns}, NULL AS reason"
            f" FROM {self.PREFIX}items"
            f" WHERE job_id = ? AND line > ? UNION ALL SELECT line, custom_id, 'rejected', 'rejected', 0, {nulls},"
            f" reason FROM {self.PREFIX}rejects WHERE job_id = ? AND line > ? ORDER BY line"
        )
        names = ("line", "custom_id", "state", "status", "attempts", *self.ROW_COLUMNS, "reason")
        for row in self._by_line(sql, lambda after: (job_id, after, job_id, after)):
            yield dict(zip(names, row, strict=True))

    def state_counts(self, job_id: str) -> dict[str, int]:
        def body(conn: Connection) -> dict[str, int]:
            prefix = self.PREFIX
            rows = conn.execute(f"SELECT state, COUNT(*) FROM {prefix}items WHERE job_id = ? GROUP BY state", (job_id,))
            counts = {row[0]: row[1] for row in rows}
            rejected = conn.execute(f"SELECT COUNT(*) FROM {prefix}rejects WHERE job_id = ?", (job_id,)).fetchone()[0]
            if rejected:
                counts["rejected"] = rejected
            return counts

        return self._read(body)


def _fetch_all(sql: str, params: tuple[Any, ...], conn: Connection) -> list[Any]:
    return list(conn.execute(sql, params).fetchall())


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
