"""The run ledger: every item of a `keel run` job, marked "sending" before its request and "done" with its result
after, so a run killed at any moment resumes without sending again anything that already has a result.

An item left "sending" by a kill is the one edge: its request may or may not have been served. The next run
counts its worst case as spent (`unseen_cost`: the ledger cannot know what it cost) and sends it again.

Several runners may run one job (`keel.batch.leases`): each claims the next item nobody holds with a lease, renewed
while its request is in flight; an item a killed runner left "sending" is claimed by another once the lease has
expired, and sent again as above.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import anthropic

from .._call import Reply
from .._exceptions import CallFailed
from .._usage import USAGE_FIELDS, Usage
from ..batch.backends import LedgerChoice
from ..batch.inputs import Item
from ..batch.jobs import Connection
from ..batch.leases import SQLLeases
from ..batch.sqlite_ledger import SQLiteBackend, job_tables

__all__ = ["RUN_LEDGERS", "SCHEMA", "SCHEMA_VERSION", "RunLedger", "RunTotals", "SQLRunLedger"]

SCHEMA_VERSION = 2
"""Version 2: runners and item leases; the tables' names start with `run_` (they can share a database with the batch
ledger's)."""

SCHEMA = (
    job_tables("run_")
    + """
CREATE TABLE IF NOT EXISTS run_items (
    job_id TEXT NOT NULL, custom_id TEXT NOT NULL, line INTEGER NOT NULL, params TEXT NOT NULL,
    size INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, request_id TEXT,
    error_type TEXT, error_message TEXT, stop_reason TEXT, model TEXT,
    input_tokens INTEGER, output_tokens INTEGER, cache_write_5m_tokens INTEGER, cache_write_1h_tokens INTEGER,
    cache_read_tokens INTEGER, cost REAL, unseen_cost REAL NOT NULL DEFAULT 0, message TEXT,
    sent_at REAL, done_at REAL, lease_owner TEXT, lease_until REAL,
    PRIMARY KEY (job_id, custom_id)
);
CREATE INDEX IF NOT EXISTS run_items_by_line ON run_items (job_id, line);
CREATE INDEX IF NOT EXISTS run_items_by_state ON run_items (job_id, state, line);
CREATE INDEX IF NOT EXISTS run_items_leased ON run_items (lease_owner) WHERE lease_until IS NOT NULL;
"""
)
"""The run ledger's tables on SQLite."""

_USAGE_SETS = ", ".join(f"{name} = ?" for name in USAGE_FIELDS)
_DONE = (
    "state = ?, request_id = ?, error_type = ?, error_message = ?, stop_reason = ?, model = ?, "
    f"{_USAGE_SETS}, cost = ?, message = ?, done_at = ?, lease_until = NULL"
)
_usage_values = attrgetter(*USAGE_FIELDS)
_USAGE_SUMS = ", ".join(f"CAST(COALESCE(SUM({name}), 0) AS BIGINT)" for name in USAGE_FIELDS)
_TOTALS = (
    "SELECT COUNT(*), COUNT(CASE WHEN state IN ('succeeded', 'errored') THEN 1 END),"
    f" COUNT(CASE WHEN state = 'errored' THEN 1 END), {_USAGE_SUMS},"
    " COALESCE(SUM(cost), 0) + COALESCE(SUM(unseen_cost), 0) FROM run_items WHERE job_id = ?"
)
# how a reply's message is stored: compact ASCII JSON, as the batch ledger stores a result's
_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(frozen=True)
class RunTotals:
    """Where a run job stands.

    Attributes:
        requests: its accepted requests.
        done: those with a result (succeeded or errored).
        errored: those whose call failed.
        usage: the tokens of every result, summed.
        cost_usd: what the job spent: its results' costs, plus the worst case of each request that was in flight
            when a run was killed (the ledger cannot know whether it was billed).
    """

    requests: int
    done: int
    errored: int
    usage: Usage
    cost_usd: float


class SQLRunLedger(SQLLeases):
    """The run ledger's logic, once for every SQL backend: `RunLedger` (SQLite) and
    `keel.bulk.postgres.PostgresRunLedger`."""

    PREFIX = "run_"
    LEASED = "run_items"
    FINAL_STATES = ("succeeded", "errored")  # the others: pending, sending
    ROW_COLUMNS = ("request_id", "error_type", "error_message", "stop_reason", "message")
    STATUS = "CASE WHEN state IN ('pending', 'sending') THEN 'unsent' ELSE state END"

    def claim(self, job_id: str, owner: str, lease: float) -> tuple[Item, bool] | None:
        """Lease the job's next item to send that nobody holds: first one left "sending" by a runner whose lease
        expired (True with it: its request may have been served), else the first pending one in input order. None when
        there is none. Each is one step down the (job_id, state, line) index, past the few items leased already."""

        def body(conn: Connection) -> tuple[Item, bool] | None:
            for state in ("sending", "pending"):
                row = conn.execute(
                    f"SELECT line, custom_id, params FROM run_items WHERE job_id = ? AND state = ? AND {self.free()}"
                    f" ORDER BY line LIMIT 1{self.SKIP_LOCKED}",
                    (job_id, state),
                ).fetchone()
                if row is not None:
                    conn.execute(
                        f"UPDATE run_items SET lease_owner = ?, lease_until = {self.NOW} + ?"
                        " WHERE job_id = ? AND custom_id = ?",
                        (owner, lease, job_id, row[1]),
                    )
                    return Item(row[0], row[1], row[2]), state == "sending"
            return None

        return self._write(body)

    def mark_sending(self, job_id: str, custom_id: str, owner: str, lease: float) -> None:
        """Recorded before the request is sent, by the runner that holds the item (or takes it, when nobody does)."""
        self._write(
            lambda conn: conn.execute(
                "UPDATE run_items SET state = 'sending', attempts = attempts + 1, sent_at = ?, lease_owner = ?,"
                f" lease_until = {self.NOW} + ? WHERE job_id = ? AND custom_id = ? AND {self.mine_or_free()}",
                (time.time(), owner, lease, job_id, custom_id, owner),
            )
        )

    def requeue(self, job_id: str, custom_id: str, unseen_usd: float) -> None:
        """An interrupted item goes back to pending, what its lost request may have cost counted as spent."""
        self._write(
            lambda conn: conn.execute(
                "UPDATE run_items SET state = 'pending', unseen_cost = unseen_cost + ? "
                "WHERE job_id = ? AND custom_id = ? AND state = 'sending'",
                (unseen_usd, job_id, custom_id),
            )
        )

    def record_reply(self, job_id: str, custom_id: str, reply: Reply) -> None:
        message = reply.message
        self._done(
            job_id,
            custom_id,
            "succeeded",
            reply.request_id,
            None,
            None,
            message.stop_reason,
            message.model,
            Usage.of(message.usage),
            reply.cost_usd,
            _COMPACT.encode(message.to_dict()),
        )

    def record_failure(self, job_id: str, custom_id: str, failed: CallFailed) -> None:
        sdk_error = failed.sdk_error
        detail = sdk_error.api_message if isinstance(sdk_error, anthropic.APIStatusError) else None
        record = failed.record
        self._done(
            job_id,
            custom_id,
            "errored",
            failed.request_id,
            failed.error_class.error_type or failed.error_class.name,
            detail or record.error,
            None,
            record.model or None,
            record.usage,
            record.cost_usd,
            None,
        )

    def _done(
        self,
        job_id: str,
        custom_id: str,
        state: str,
        request_id: str | None,
        error_type: str | None,
        error_message: str | None,
        stop_reason: str | None,
        model: str | None,
        usage: Usage,
        cost: float | None,
        message: str | None,
    ) -> None:
        values = (state, request_id, error_type, error_message, stop_reason, model, *_usage_values(usage), cost)
        self._write(
            lambda conn: conn.execute(
                f"UPDATE run_items SET {_DONE} WHERE job_id = ? AND custom_id = ?",
                (*values, message, time.time(), job_id, custom_id),
            )
        )

    def totals(self, job_id: str) -> RunTotals:
        def body(conn: Connection) -> tuple[Any, ...]:
            return tuple(conn.execute(_TOTALS, (job_id,)).fetchone())

        requests, done, errored, *usage, cost = self._read(body)
        return RunTotals(requests, done, errored, Usage(*usage), cost)


class RunLedger(SQLiteBackend, SQLRunLedger):
    """The run ledger in one SQLite file (`runs.sqlite3` under `.keel/` or `$KEEL_HOME` by default)."""

    KIND = "run ledger"
    APPLICATION_ID = 0x6B65656C  # "keel"
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = SCHEMA


def _postgres_run_ledger(url: str) -> SQLRunLedger:
    from .postgres import PostgresRunLedger

    return PostgresRunLedger(url)


RUN_LEDGERS: LedgerChoice[SQLRunLedger] = LedgerChoice("runs.sqlite3", RunLedger, _postgres_run_ledger)
"""Which run ledger `keel run` uses: `--ledger FILE`, else `KEEL_DATABASE_URL`'s PostgreSQL, else `runs.sqlite3` under
`$KEEL_HOME` or `./.keel`."""
