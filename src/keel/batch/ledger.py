"""The batch ledger: every job, shard, batch id and item state, written before and after every API call.

Running the same job again reads it back and carries on; nothing is submitted twice. The runner talks to
the small `Ledger` protocol; `SQLiteLedger` is the embedded default (a file under `.keel/`). A shared
backend (PostgreSQL) implements the same protocol.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

from .._usage import USAGE_FIELDS, Usage
from .inputs import Item, Reject
from .jobs import Job, SQLiteJobs

# Item states. "pending": waiting for a batch (new, or to be resubmitted); "queued": in a planned shard;
# "submitted": in a batch; final: "succeeded", "errored", "canceled", "expired".
FINAL_STATES = ("succeeded", "errored", "canceled", "expired")


@dataclass(frozen=True)
class Shard:
    """One Message Batch of a job (a job is split at 100,000 requests or 256 MB).

    Attributes:
        shard_id: its number in the ledger.
        job_id: the job it belongs to.
        round: 1 for the first submission, more for resubmissions of what can still succeed.
        state: planned / submitting / submitted / ended / collected.
        batch_id: the API's batch id, once created.
        requests: requests in it.
        bytes: the size of its request body.
        submit_started_at: when its submission began (a submission cut short is matched against the API's list).
        counts: the batch's request_counts at the last poll.
    """

    shard_id: int
    job_id: str
    round: int
    state: str
    batch_id: str | None
    requests: int
    bytes: int
    submit_started_at: float | None
    counts: dict[str, int]


@dataclass(frozen=True)
class ItemResult:
    """What a batch result says about one item, as the ledger stores it."""

    custom_id: str
    state: str  # a final state, or "pending" to be resubmitted
    result_type: str  # succeeded / errored / canceled / expired
    error_type: str | None = None
    error_message: str | None = None
    stop_reason: str | None = None
    model: str | None = None
    usage: Usage | None = None
    cost_batch: float | None = None
    cost_standard: float | None = None
    message_json: str | None = None


class Ledger(Protocol):
    def job(self, job_id: str) -> Job | None: ...
    def create_job(self, job_id: str, input_path: str, options: dict[str, Any]) -> Job: ...
    def set_job_status(self, job_id: str, status: str) -> None: ...
    def jobs(self) -> list[Job]: ...
    def __contains__(self, key: object) -> bool: ...
    def add_inputs(self, job_id: str, lines: Iterable[Item | Reject]) -> tuple[int, int]: ...
    def open_items(self, job_id: str) -> Iterator[Item]: ...
    def exhaust(self, job_id: str, max_attempts: int) -> None: ...
    def cancel_unsent(self, job_id: str) -> None: ...
    def plan_shards(self, job_id: str, max_requests: int, max_bytes: int) -> list[Shard]: ...
    def shards(self, job_id: str, states: tuple[str, ...] | None = None) -> list[Shard]: ...
    def mark_submitting(self, shard_id: int) -> None: ...
    def mark_submitted(self, shard_id: int, batch_id: str) -> None: ...
    def update_counts(self, shard_id: int, counts: dict[str, int], ended: bool) -> None: ...
    def known_batch_ids(self) -> set[str]: ...
    def shard_body(self, shard_id: int) -> Iterator[bytes]: ...
    def shard_custom_ids(self, shard_id: int) -> set[str]: ...
    def shard_params(self, shard_id: int) -> Iterator[str]: ...
    def shard_cost(self, shard_id: int) -> float: ...
    def record_results(self, shard_id: int, outcomes: Iterable[ItemResult]) -> int: ...
    def items_in_order(self, job_id: str) -> Iterator[dict[str, Any]]: ...
    def state_counts(self, job_id: str) -> dict[str, int]: ...
    def usage_by_model(self, job_id: str) -> list[dict[str, Any]]: ...


SCHEMA_VERSION = 2
"""Version 2: usage by cache-write duration (`keel.Usage`'s fields)."""

SCHEMA = """
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
    submit_started_at REAL, submitted_at REAL, ended_at REAL, counts TEXT NOT NULL DEFAULT '{}'
);
"""


# What a result sets on its item, in `ItemResult` order; `record_results` stages results in a temporary table first.
_RESULT_COLUMNS = (
    f"state, result_type, error_type, error_message, stop_reason, model, {', '.join(USAGE_FIELDS)},"
    " cost_batch, cost_standard, message"
)
_NO_USAGE = (None,) * len(USAGE_FIELDS)
_usage_values = attrgetter(*USAGE_FIELDS)
_USAGE_SUMS = ", ".join(f"SUM({name}) AS {name}" for name in USAGE_FIELDS)
_STAGE = "keel_staged_results"
_STAGE_PLACES = ", ".join("?" * (1 + len(_RESULT_COLUMNS.split(","))))  # custom_id, then the result columns


def _shard(row: sqlite3.Row) -> Shard:
    return Shard(
        shard_id=row["shard_id"],
        job_id=row["job_id"],
        round=row["round"],
        state=row["state"],
        batch_id=row["batch_id"],
        requests=row["requests"],
        bytes=row["bytes"],
        submit_started_at=row["submit_started_at"],
        counts=json.loads(row["counts"]),
    )


class SQLiteLedger(SQLiteJobs):
    """The embedded ledger: one SQLite file, WAL mode, each write its own committed transaction."""

    KIND = "batch ledger"
    APPLICATION_ID = 0  # as the files of keel versions before the kinds were told apart
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = SCHEMA
    FINAL_STATES = FINAL_STATES
    RESULT_COLUMNS = ("result_type", "error_type", "error_message", "stop_reason", "message")
    # still pending at the end: out of attempts (its last result expired); never in a batch: unsent
    STATUS = (
        "CASE WHEN state = 'pending' AND attempts > 0 THEN 'expired' WHEN state IN ('pending', 'queued') THEN 'unsent'"
        " ELSE state END"
    )

    # --- shards ----------------------------------------------------------------------------------

    def exhaust(self, job_id: str, max_attempts: int) -> None:
        """Pending items out of attempts get their final state: expired ones stay expired, others errored."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE items SET state = CASE result_type WHEN 'expired' THEN 'expired' ELSE 'errored' END "
                "WHERE job_id = ? AND state = 'pending' AND attempts >= ?",
                (job_id, max_attempts),
            )

    def cancel_unsent(self, job_id: str) -> None:
        """A canceled job: items not in a batch yet are canceled, and planned shards dropped."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE items SET state = 'canceled', result_type = 'canceled' "
                "WHERE job_id = ? AND (state = 'pending' OR (state = 'queued' AND shard_id IN "
                "(SELECT shard_id FROM shards WHERE job_id = ? AND state = 'planned')))",
                (job_id, job_id),
            )
            conn.execute("DELETE FROM shards WHERE job_id = ? AND state = 'planned'", (job_id,))

    def plan_shards(self, job_id: str, max_requests: int, max_bytes: int) -> list[Shard]:
        """Group the pending items, in input order, into new shards under both limits."""
        with self._tx() as conn:
            round_row = conn.execute("SELECT COALESCE(MAX(round), 0) + 1 FROM shards WHERE job_id = ?", (job_id,))
            round_number = int(round_row.fetchone()[0])
            # first pass, read-only: the line ranges of the shards; second: assign them
            ranges: list[tuple[int, int, int, int]] = []  # first line, last line, requests, bytes
            first = last = count = size = 0
            pending = conn.execute(
                "SELECT line, size FROM items WHERE job_id = ? AND state = 'pending' ORDER BY line", (job_id,)
            )
            for line, item_size in pending:
                if count and (count >= max_requests or size + item_size > max_bytes):
                    ranges.append((first, last, count, size))
                    count = size = 0
                if not count:
                    first = line
                last, count, size = line, count + 1, size + item_size
            if count:
                ranges.append((first, last, count, size))
            for first, last, count, size in ranges:
                cursor = conn.execute(
                    "INSERT INTO shards (job_id, round, state, requests, bytes) VALUES (?, ?, 'planned', ?, ?)",
                    (job_id, round_number, count, size),
                )
                conn.execute(
                    "UPDATE items SET state = 'queued', shard_id = ? "
                    "WHERE job_id = ? AND state = 'pending' AND line BETWEEN ? AND ?",
                    (cursor.lastrowid, job_id, first, last),
                )
        return self.shards(job_id, ("planned",))

    def shards(self, job_id: str, states: tuple[str, ...] | None = None) -> list[Shard]:
        rows = self._conn.execute("SELECT * FROM shards WHERE job_id = ? ORDER BY shard_id", (job_id,)).fetchall()
        return [_shard(row) for row in rows if states is None or row["state"] in states]

    def mark_submitting(self, shard_id: int) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE shards SET state = 'submitting', submit_started_at = ? WHERE shard_id = ?",
                (time.time(), shard_id),
            )

    def mark_submitted(self, shard_id: int, batch_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE shards SET state = 'submitted', batch_id = ?, submitted_at = ? WHERE shard_id = ?",
                (batch_id, time.time(), shard_id),
            )
            conn.execute(
                "UPDATE items SET state = 'submitted', attempts = attempts + 1 WHERE shard_id = ?", (shard_id,)
            )

    def update_counts(self, shard_id: int, counts: dict[str, int], ended: bool) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE shards SET counts = ?, state = CASE WHEN ? THEN 'ended' ELSE state END, "
                "ended_at = CASE WHEN ? THEN ? ELSE ended_at END WHERE shard_id = ?",
                (json.dumps(counts), ended, ended, time.time(), shard_id),
            )

    def known_batch_ids(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT batch_id FROM shards WHERE batch_id IS NOT NULL")}

    def shard_body(self, shard_id: int) -> Iterator[bytes]:
        """The create request's JSON body for a shard, in chunks, read from the ledger as it is sent."""
        yield b'{"requests":['
        first = True
        chunk: list[bytes] = []
        cursor = self._conn.execute("SELECT custom_id, params FROM items WHERE shard_id = ? ORDER BY line", (shard_id,))
        for custom_id, params in cursor:
            piece = f'{"" if first else ","}{{"custom_id":{json.dumps(custom_id)},"params":{params}}}'
            chunk.append(piece.encode())
            first = False
            if len(chunk) >= 500:
                yield b"".join(chunk)
                chunk.clear()
        if chunk:
            yield b"".join(chunk)
        yield b"]}"

    def shard_custom_ids(self, shard_id: int) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT custom_id FROM items WHERE shard_id = ?", (shard_id,))}

    def shard_params(self, shard_id: int) -> Iterator[str]:
        """The params JSON of each of a shard's requests."""
        return (row[0] for row in self._conn.execute("SELECT params FROM items WHERE shard_id = ?", (shard_id,)))

    def shard_cost(self, shard_id: int) -> float:
        """What a shard's succeeded requests cost at batch prices."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(cost_batch), 0) FROM items WHERE shard_id = ? AND state = 'succeeded'", (shard_id,)
        ).fetchone()
        return float(row[0])

    def record_results(self, shard_id: int, outcomes: Iterable[ItemResult]) -> int:
        """Store a shard's results in one transaction (a kill mid-download leaves the shard to download again);
        the shard becomes `collected`. Returns the number of results stored.

        Results arrive in no particular order. Updating each item as it arrives would write all over the items
        table (a random page per result, far more pages than the cache holds, so each goes to the WAL again and
        again); instead they are appended to a temporary table, then applied in one pass over the shard's items
        in table order. A custom_id given twice keeps its last result; one that is not in the shard raises
        `LookupError` (the first such, in arrival order) and nothing is stored.
        """
        with self._tx() as conn:
            conn.execute(f"DROP TABLE IF EXISTS temp.{_STAGE}")  # rolled back with a failed call; to be sure
            conn.execute(f"CREATE TABLE temp.{_STAGE} (custom_id TEXT NOT NULL, {_RESULT_COLUMNS})")
            stored = 0

            def staged() -> Iterator[tuple[Any, ...]]:
                nonlocal stored
                for o in outcomes:
                    yield (
                        o.custom_id,
                        o.state,
                        o.result_type,
                        o.error_type,
                        o.error_message,
                        o.stop_reason,
                        o.model,
                        *(_NO_USAGE if o.usage is None else _usage_values(o.usage)),
                        o.cost_batch,
                        o.cost_standard,
                        o.message_json,
                    )
                    stored += 1

            conn.executemany(f"INSERT INTO temp.{_STAGE} VALUES ({_STAGE_PLACES})", staged())
            conn.execute(f"CREATE INDEX temp.{_STAGE}_ids ON {_STAGE} (custom_id)")
            updated = conn.execute(
                f"UPDATE items SET ({_RESULT_COLUMNS}) = (SELECT {_RESULT_COLUMNS} FROM temp.{_STAGE} AS staged"
                " WHERE staged.custom_id = items.custom_id ORDER BY staged.rowid DESC LIMIT 1)"
                f" WHERE shard_id = ? AND custom_id IN (SELECT custom_id FROM temp.{_STAGE})",
                (shard_id,),
            ).rowcount
            distinct = conn.execute(f"SELECT COUNT(DISTINCT custom_id) FROM temp.{_STAGE}").fetchone()[0]
            if updated != distinct:
                foreign = conn.execute(
                    f"SELECT custom_id FROM temp.{_STAGE} AS staged WHERE NOT EXISTS (SELECT 1 FROM items"
                    " WHERE items.job_id = (SELECT job_id FROM shards WHERE shard_id = ?)"
                    " AND items.custom_id = staged.custom_id AND items.shard_id = ?) ORDER BY staged.rowid LIMIT 1",
                    (shard_id, shard_id),
                ).fetchone()
                raise LookupError(f"result for custom_id {foreign[0]!r} does not belong to shard {shard_id}")
            conn.execute(f"DROP TABLE temp.{_STAGE}")
            conn.execute("UPDATE shards SET state = 'collected' WHERE shard_id = ?", (shard_id,))
        return stored

    # --- reading back ----------------------------------------------------------------------------

    def usage_by_model(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            f"SELECT model, COUNT(*) AS requests, {_USAGE_SUMS}, SUM(cost_batch) AS cost_batch,"
            " SUM(cost_standard) AS cost_standard, COUNT(cost_batch) AS priced"
            " FROM items WHERE job_id = ? AND state = 'succeeded' GROUP BY model ORDER BY model",
            (job_id,),
        )
        return [dict(row) for row in rows]
