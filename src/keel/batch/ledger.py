"""The batch ledger: every job, shard, batch id and item state, written before and after every API call.

Running the same job again reads it back and carries on; nothing is submitted twice. The runner talks to
the small `Ledger` protocol. `SQLLedger` holds the ledger's logic once (its jobs, items and rejects as every
job ledger keeps them, `keel.batch.jobs.SQLJobs`, and its shards), in SQL that SQLite and PostgreSQL both run;
`SQLiteLedger` (`keel.batch.sqlite_ledger`, a file under `.keel/`) is the embedded default and `PostgresLedger`
(`keel.batch.postgres`, `KEEL_DATABASE_URL`) the shared one. Each only connects, runs transactions and stages
results its own way.

Every write is one transaction, and safe to run again (a shared backend retries one whose connection was lost,
and its first try may have committed): `mark_submitted` counts an attempt only for items still queued.

Several runners may work on one job (`keel.batch.leases`): each claims shards with a lease, and a write that only
the shard's runner may make (submitting it, storing its results) is conditional on holding it, or on nobody holding
it. The writes that change the job's items as a whole (planning shards, storing results, giving up on items) lock
the job's row first, so two runners do them one after the other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

from .._usage import USAGE_FIELDS, Usage
from .inputs import Item, Reject
from .jobs import Connection, Job
from .leases import LeaseLost, LiveRunner, SQLLeases

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
        lease_owner: the runner that holds it, or last held it (`RunnerId.key`); None if none ever did.
        lease_left: seconds until that runner's lease expires (below 0: expired); None when nobody holds it.
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
    lease_owner: str | None = None
    lease_left: float | None = None

    def held_by(self, owner: str) -> bool:
        """Whether `owner` holds it (its lease maybe expired, but nobody took it over)."""
        return self.lease_owner == owner and self.lease_left is not None


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
    def claim(self, job_id: str, owner: str, lease: float, states: tuple[str, ...] = ...) -> Shard | None: ...
    def release(self, shard_id: int, owner: str) -> None: ...
    def mark_submitting(self, shard_id: int, owner: str, lease: float) -> bool: ...
    def mark_submitted(self, shard_id: int, batch_id: str, owner: str | None = None) -> bool: ...
    def update_counts(self, shard_id: int, counts: dict[str, int], ended: bool) -> None: ...
    def known_batch_ids(self) -> set[str]: ...
    def shard_body(self, shard_id: int) -> Iterator[bytes]: ...
    def shard_custom_ids(self, shard_id: int) -> set[str]: ...
    def shard_params(self, shard_id: int) -> Iterator[str]: ...
    def shard_cost(self, shard_id: int) -> float: ...
    def record_results(self, shard_id: int, outcomes: Iterable[ItemResult], owner: str) -> int: ...
    def items_in_order(self, job_id: str) -> Iterator[dict[str, Any]]: ...
    def state_counts(self, job_id: str) -> dict[str, int]: ...
    def usage_by_model(self, job_id: str) -> list[dict[str, Any]]: ...
    def join(self, job_id: str, runner: str, lease: float) -> list[LiveRunner]: ...
    def renew(self, runner: str, lease: float) -> None: ...
    def leave(self, runner: str) -> None: ...
    def runners(self, job_id: str, besides: str | None = None) -> list[LiveRunner]: ...


SCHEMA_VERSION = 3
"""Version 2: usage by cache-write duration (`keel.Usage`'s fields). Version 3: runners and shard leases."""

# What a result sets on its item, in `ItemResult` order; `record_results` stages results in a temporary table first,
# each with its arrival number (`seq`: a custom_id given twice keeps its last result).
RESULT_COLUMNS = (
    "state",
    "result_type",
    "error_type",
    "error_message",
    "stop_reason",
    "model",
    *USAGE_FIELDS,
    "cost_batch",
    "cost_standard",
    "message",
)
STAGE = "keel_staged_results"
_RESULTS = ", ".join(RESULT_COLUMNS)
_NO_USAGE = (None,) * len(USAGE_FIELDS)
_usage_values = attrgetter(*USAGE_FIELDS)
_USAGE_SUMS = ", ".join(f"CAST(SUM({name}) AS BIGINT) AS {name}" for name in USAGE_FIELDS)
_SHARD_COLUMNS = "shard_id, job_id, round, state, batch_id, requests, bytes, submit_started_at, counts, lease_owner"
_UNCOLLECTED = ("planned", "submitting", "submitted", "ended")


def _shard(row: tuple[Any, ...]) -> Shard:
    shard_id, job, round_number, state, batch_id, requests, size, started, counts, owner, left = row
    return Shard(shard_id, job, round_number, state, batch_id, requests, size, started, json.loads(counts), owner, left)


def _lock_job(conn: Connection, job_id: str) -> None:
    """Lock the job's row until the transaction ends (a write: SQLite's whole file is locked already)."""
    conn.execute("UPDATE jobs SET updated_at = ? WHERE job_id = ?", (time.time(), job_id))


class SQLLedger(SQLLeases):
    """The batch ledger's logic, once for every SQL backend. A subclass says how to run a transaction (`_write`), a
    read (`_read`) and rows in input order (`_by_line`), and how to stage and apply results (`_stage_results`,
    `APPLY_RESULTS`)."""

    FINAL_STATES = FINAL_STATES
    LEASED = "shards"
    ROW_COLUMNS = ("result_type", "error_type", "error_message", "stop_reason", "message")
    # still pending at the end: out of attempts (its last result expired); never in a batch: unsent
    STATUS = (
        "CASE WHEN state = 'pending' AND attempts > 0 THEN 'expired' WHEN state IN ('pending', 'queued') THEN 'unsent'"
        " ELSE state END"
    )

    APPLY_RESULTS: str
    """UPDATE items from the staged results of shard `?` (the last result of each custom_id); its row count is
    the number of items updated."""

    def _stage_results(self, conn: Connection, rows: Iterator[tuple[Any, ...]]) -> None:
        """Load `rows` (seq, custom_id, then `RESULT_COLUMNS`) into a temporary table `STAGE` of this transaction."""
        raise NotImplementedError

    # --- shards ----------------------------------------------------------------------------------

    def exhaust(self, job_id: str, max_attempts: int) -> None:
        """Pending items out of attempts get their final state: expired ones stay expired, others errored."""

        def body(conn: Connection) -> None:
            _lock_job(conn, job_id)
            conn.execute(
                "UPDATE items SET state = CASE result_type WHEN 'expired' THEN 'expired' ELSE 'errored' END "
                "WHERE job_id = ? AND state = 'pending' AND attempts >= ?",
                (job_id, max_attempts),
            )

        self._write(body)

    def cancel_unsent(self, job_id: str) -> None:
        """A canceled job: items not in a batch yet are canceled, and planned shards dropped."""

        def body(conn: Connection) -> None:
            _lock_job(conn, job_id)
            conn.execute(
                "UPDATE items SET state = 'canceled', result_type = 'canceled' "
                "WHERE job_id = ? AND (state = 'pending' OR (state = 'queued' AND shard_id IN "
                "(SELECT shard_id FROM shards WHERE job_id = ? AND state = 'planned')))",
                (job_id, job_id),
            )
            conn.execute("DELETE FROM shards WHERE job_id = ? AND state = 'planned'", (job_id,))

        self._write(body)

    def plan_shards(self, job_id: str, max_requests: int, max_bytes: int) -> list[Shard]:
        """Group the pending items, in input order, into new shards under both limits."""

        def body(conn: Connection) -> None:
            _lock_job(conn, job_id)  # another runner planning meanwhile would plan the same items
            round_row = conn.execute("SELECT COALESCE(MAX(round), 0) + 1 FROM shards WHERE job_id = ?", (job_id,))
            round_number = int(round_row.fetchone()[0])
            # first pass, read-only: the line ranges of the shards; second: assign them
            ranges: list[tuple[int, int, int, int]] = []  # first line, last line, requests, bytes
            first = last = count = size = 0
            pending = conn.execute(
                "SELECT line, size FROM items WHERE job_id = ? AND state = 'pending' ORDER BY line", (job_id,)
            ).fetchall()
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
                (shard_id,) = conn.execute(
                    "INSERT INTO shards (job_id, round, state, requests, bytes) VALUES (?, ?, 'planned', ?, ?)"
                    " RETURNING shard_id",
                    (job_id, round_number, count, size),
                ).fetchone()
                conn.execute(
                    "UPDATE items SET state = 'queued', shard_id = ? "
                    "WHERE job_id = ? AND state = 'pending' AND line BETWEEN ? AND ?",
                    (shard_id, job_id, first, last),
                )

        self._write(body)
        return self.shards(job_id, ("planned",))

    def shards(self, job_id: str, states: tuple[str, ...] | None = None) -> list[Shard]:
        sql = f"SELECT {self._shard_columns()} FROM shards WHERE job_id = ? ORDER BY shard_id"
        rows = self._read(lambda conn: conn.execute(sql, (job_id,)).fetchall())
        return [_shard(row) for row in rows if states is None or row[3] in states]

    def _shard_columns(self) -> str:
        return f"{_SHARD_COLUMNS}, CASE WHEN lease_until IS NULL THEN NULL ELSE lease_until - {self.NOW} END"

    def claim(self, job_id: str, owner: str, lease: float, states: tuple[str, ...] = _UNCOLLECTED) -> Shard | None:
        """Lease the job's first shard in one of `states` that nobody holds (planned shards last: the work other
        runners left comes first); None when there is none. The shard returned still names its last owner."""

        def body(conn: Connection) -> Shard | None:
            places = ", ".join("?" * len(states))
            row = conn.execute(
                f"SELECT {self._shard_columns()} FROM shards WHERE job_id = ? AND state IN ({places}) AND {self.free()}"
                f" ORDER BY state = 'planned', shard_id LIMIT 1{self.SKIP_LOCKED}",
                (job_id, *states),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                f"UPDATE shards SET lease_owner = ?, lease_until = {self.NOW} + ? WHERE shard_id = ?",
                (owner, lease, row[0]),
            )
            return _shard(row)

        return self._write(body)

    def release(self, shard_id: int, owner: str) -> None:
        """Give back the lease `owner` holds on a shard (another runner may take it at once)."""
        self._write(
            lambda conn: conn.execute(
                "UPDATE shards SET lease_until = NULL WHERE shard_id = ? AND lease_owner = ?", (shard_id, owner)
            )
        )

    def _mine_or_free(self) -> str:
        """SQL: the shard is held by the runner `?`, or by nobody (then it becomes its)."""
        return f"(lease_owner = ? OR {self.free()})"

    def mark_submitting(self, shard_id: int, owner: str, lease: float) -> bool:
        """Mark the shard `submitting` (before its create is sent), leased to `owner`; False, changing nothing, when
        another runner holds it."""
        return bool(
            self._write(
                lambda conn: (
                    conn.execute(
                        f"UPDATE shards SET state = 'submitting', submit_started_at = ?, lease_owner = ?,"
                        f" lease_until = {self.NOW} + ? WHERE shard_id = ? AND {self.mine_or_free()}",
                        (time.time(), owner, lease, shard_id, owner),
                    ).rowcount
                )
            )
        )

    def mark_submitted(self, shard_id: int, batch_id: str, owner: str | None = None) -> bool:
        """The shard is the batch `batch_id`; its queued items are submitted (an attempt each). With `owner`, only a
        shard still `submitting` (or already this batch) that `owner` holds, or nobody does; False, changing nothing,
        otherwise. Without (`keel batch adopt`, a person's decision), whatever holds it."""

        def body(conn: Connection) -> bool:
            sql = "UPDATE shards SET state = 'submitted', batch_id = ?, submitted_at = ? WHERE shard_id = ?"
            params: tuple[Any, ...] = (batch_id, time.time(), shard_id)
            if owner is not None:
                sql += f" AND (state = 'submitting' OR batch_id = ?) AND {self.mine_or_free()}"
                params += (batch_id, owner)
            if not conn.execute(sql, params).rowcount:
                return False
            conn.execute(
                "UPDATE items SET state = 'submitted', attempts = attempts + 1 WHERE shard_id = ? AND state = 'queued'",
                (shard_id,),
            )
            return True

        return self._write(body)

    def update_counts(self, shard_id: int, counts: dict[str, int], ended: bool) -> None:
        self._write(
            lambda conn: conn.execute(
                "UPDATE shards SET counts = ?, state = CASE WHEN ? THEN 'ended' ELSE state END, "
                "ended_at = CASE WHEN ? THEN ? ELSE ended_at END WHERE shard_id = ?",
                (json.dumps(counts), ended, ended, time.time(), shard_id),
            )
        )

    def known_batch_ids(self) -> set[str]:
        sql = "SELECT batch_id FROM shards WHERE batch_id IS NOT NULL"
        return {row[0] for row in self._read(lambda conn: conn.execute(sql).fetchall())}

    def shard_body(self, shard_id: int) -> Iterator[bytes]:
        """The create request's JSON body for a shard, in chunks, read from the ledger as it is sent."""
        yield b'{"requests":['
        first = True
        chunk: list[bytes] = []
        rows = self._by_line(
            "SELECT line, custom_id, params FROM items WHERE shard_id = ? AND line > ? ORDER BY line",
            lambda after: (shard_id, after),
        )
        for _, custom_id, params in rows:
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
        sql = "SELECT custom_id FROM items WHERE shard_id = ?"
        return {row[0] for row in self._read(lambda conn: conn.execute(sql, (shard_id,)).fetchall())}

    def shard_params(self, shard_id: int) -> Iterator[str]:
        """The params JSON of each of a shard's requests, streamed."""
        sql = "SELECT line, params FROM items WHERE shard_id = ? AND line > ? ORDER BY line"
        return (params for _, params in self._by_line(sql, lambda after: (shard_id, after)))

    def shard_cost(self, shard_id: int) -> float:
        """What a shard's succeeded requests cost at batch prices."""
        sql = "SELECT COALESCE(SUM(cost_batch), 0) FROM items WHERE shard_id = ? AND state = 'succeeded'"
        return float(self._read(lambda conn: conn.execute(sql, (shard_id,)).fetchone())[0])

    def record_results(self, shard_id: int, outcomes: Iterable[ItemResult], owner: str) -> int:
        """Store a shard's results in one transaction (a kill mid-download leaves the shard to download again);
        the shard becomes `collected`, its lease given back. Returns the number of results stored; `LeaseLost`,
        storing nothing, when a runner other than `owner` holds the shard.

        Results arrive in no particular order. Updating each item as it arrives would write all over the items
        table (a random page per result, far more pages than the cache holds, so each goes to the WAL again and
        again); instead they are appended to a temporary table, then applied in one pass over the shard's items
        in table order. A custom_id given twice keeps its last result; one that is not in the shard raises
        `LookupError` (the first such, in arrival order) and nothing is stored. `outcomes` is read once: a connection
        lost while storing raises `StoreUnavailable` at once (the runner then downloads the shard again).
        """
        stored = 0

        def staged() -> Iterator[tuple[Any, ...]]:
            nonlocal stored
            for o in outcomes:
                stored += 1
                yield (
                    stored,
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

        def body(conn: Connection) -> None:
            _lock_job(conn, self._job_of(conn, shard_id))
            self._stage_results(conn, staged())
            updated = conn.execute(self.APPLY_RESULTS, (shard_id,)).rowcount
            distinct = conn.execute(f"SELECT COUNT(DISTINCT custom_id) FROM {STAGE}").fetchone()[0]
            if updated != distinct:
                foreign = conn.execute(
                    f"SELECT custom_id FROM {STAGE} AS staged WHERE NOT EXISTS (SELECT 1 FROM items"
                    " WHERE items.job_id = (SELECT job_id FROM shards WHERE shard_id = ?)"
                    " AND items.custom_id = staged.custom_id AND items.shard_id = ?) ORDER BY staged.seq LIMIT 1",
                    (shard_id, shard_id),
                ).fetchone()
                raise LookupError(f"result for custom_id {foreign[0]!r} does not belong to shard {shard_id}")
            conn.execute(f"DROP TABLE {STAGE}")
            collected = conn.execute(
                "UPDATE shards SET state = 'collected', lease_owner = ?, lease_until = NULL"
                f" WHERE shard_id = ? AND {self.mine_or_free()}",
                (owner, shard_id, owner),
            )
            if not collected.rowcount:
                raise LeaseLost(f"shard {shard_id} was taken over by another runner")

        self._write(body, again=False)
        return stored

    @staticmethod
    def _job_of(conn: Connection, shard_id: int) -> str:
        return str(conn.execute("SELECT job_id FROM shards WHERE shard_id = ?", (shard_id,)).fetchone()[0])

    # --- reading back ----------------------------------------------------------------------------

    def usage_by_model(self, job_id: str) -> list[dict[str, Any]]:
        names = ("model", "requests", *USAGE_FIELDS, "cost_batch", "cost_standard", "priced")
        sql = (
            f"SELECT model, COUNT(*) AS requests, {_USAGE_SUMS}, SUM(cost_batch) AS cost_batch,"
            " SUM(cost_standard) AS cost_standard, COUNT(cost_batch) AS priced"
            " FROM items WHERE job_id = ? AND state = 'succeeded' GROUP BY model ORDER BY model"
        )
        rows = self._read(lambda conn: conn.execute(sql, (job_id,)).fetchall())
        return [dict(zip(names, row, strict=True)) for row in rows]
