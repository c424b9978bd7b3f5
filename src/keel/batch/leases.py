"""Several runners on one job: who they are, the leases they hold, and the heartbeat that keeps them.

A runner (a `keel batch run` or `keel run` process, or a runner object in one) registers with its job in the
ledger's `runners` table and claims its work (a batch job's shards, a run job's requests) with a lease: a
`lease_owner`, `lease_until` pair on the row, set by a conditional UPDATE (after `SELECT … FOR UPDATE SKIP LOCKED`
on PostgreSQL; SQLite's `BEGIN IMMEDIATE` serialises writers, which does the same). While it works, a heartbeat
thread renews its registration and every lease it holds every third of the lease. A runner that stops cleanly gives
its leases back at once; one killed stops renewing, and once its leases expire another runner takes its work over.

Lease times are the database's clock (`NOW`), never a runner's: two hosts with skewed clocks agree on who holds what.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Protocol

from .jobs import Connection, SQLJobs

__all__ = ["Heartbeat", "LeaseLost", "Leasing", "LiveRunner", "RunnerId", "SQLLeases"]

logger = logging.getLogger("keel.batch")


@dataclass(frozen=True)
class RunnerId:
    """One runner: its host and process, and a token that tells apart runners in one process."""

    host: str
    pid: int
    token: str

    @classmethod
    def here(cls) -> RunnerId:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    @property
    def key(self) -> str:
        """What the ledger's `lease_owner` and `runners.runner_id` hold."""
        return f"{self.host}/{self.pid}/{self.token}"

    @classmethod
    def parse(cls, key: str) -> RunnerId:
        host, pid, token = key.rsplit("/", 2)
        return cls(host, int(pid), token)

    def __str__(self) -> str:
        return f"runner {self.host} pid {self.pid}"


@dataclass(frozen=True)
class LiveRunner:
    """A runner registered with a job whose lease has not expired.

    Attributes:
        runner: who it is.
        started_at: when it joined the job (Unix time).
        lease_left: seconds until its registration expires, unless renewed.
    """

    runner: RunnerId
    started_at: float
    lease_left: float


class LeaseLost(Exception):
    """Another runner took over what this one was about to record (its lease had expired)."""


class Leasing(Protocol):
    """What a heartbeat needs of a ledger."""

    def join(self, job_id: str, runner: str, lease: float) -> list[LiveRunner]: ...
    def renew(self, runner: str, lease: float) -> None: ...
    def leave(self, runner: str) -> None: ...


class SQLLeases(SQLJobs):
    """Runners and leases, once for every SQL backend. A backend gives its clock (`NOW`) and its row lock for a
    claim (`SKIP_LOCKED`); a kind of ledger names the table whose rows are leased (`LEASED`)."""

    NOW: ClassVar[str]
    """SQL: the database's clock, in Unix seconds."""
    SKIP_LOCKED: ClassVar[str]
    """Appended to a claim's SELECT: `FOR UPDATE SKIP LOCKED` on PostgreSQL, nothing on SQLite (whose writers are
    serialised by `BEGIN IMMEDIATE`)."""
    LEASED: ClassVar[str]
    """The table whose rows runners lease ("shards", "items")."""

    def free(self) -> str:
        """SQL: a row nobody holds (never leased, given back, or its lease expired)."""
        return f"(lease_until IS NULL OR lease_until < {self.NOW})"

    def mine_or_free(self) -> str:
        """SQL: a row held by the runner `?`, or by nobody (a write that sets the lease then makes it the runner's)."""
        return f"(lease_owner = ? OR {self.free()})"

    def join(self, job_id: str, runner: str, lease: float) -> list[LiveRunner]:
        """Register `runner` with the job (and forget the job's runners that expired); the others still live."""

        def body(conn: Connection) -> None:
            runners, now = f"{self.PREFIX}runners", self.NOW
            conn.execute(f"DELETE FROM {runners} WHERE job_id = ? AND lease_until < {now}", (job_id,))
            conn.execute(
                f"INSERT INTO {runners} (runner_id, job_id, started_at, lease_until) VALUES (?, ?, {now}, {now} + ?)",
                (runner, job_id, lease),
            )

        self._write(body)
        return self.runners(job_id, besides=runner)

    def renew(self, runner: str, lease: float) -> None:
        """Push back the expiry of the runner's registration and of every lease it holds."""

        def body(conn: Connection) -> None:
            conn.execute(
                f"UPDATE {self.PREFIX}runners SET lease_until = {self.NOW} + ? WHERE runner_id = ?", (lease, runner)
            )
            conn.execute(
                f"UPDATE {self.LEASED} SET lease_until = {self.NOW} + ?"
                " WHERE lease_owner = ? AND lease_until IS NOT NULL",
                (lease, runner),
            )

        self._write(body)

    def leave(self, runner: str) -> None:
        """Give back every lease the runner holds, and its registration: another runner may take its work at once."""

        def body(conn: Connection) -> None:
            conn.execute(
                f"UPDATE {self.LEASED} SET lease_until = NULL WHERE lease_owner = ? AND lease_until IS NOT NULL",
                (runner,),
            )
            conn.execute(f"DELETE FROM {self.PREFIX}runners WHERE runner_id = ?", (runner,))

        self._write(body)

    def holders(self, job_id: str) -> dict[RunnerId, int]:
        """The runners whose leases on the job's rows have not expired, and how many rows each holds."""
        sql = (
            f"SELECT lease_owner, COUNT(*) FROM {self.LEASED} WHERE job_id = ? AND lease_until >= {self.NOW}"
            " GROUP BY lease_owner ORDER BY lease_owner"
        )
        rows = self._read(lambda conn: conn.execute(sql, (job_id,)).fetchall())
        return {RunnerId.parse(owner): count for owner, count in rows}

    def runners(self, job_id: str, besides: str | None = None) -> list[LiveRunner]:
        """The job's runners whose registration has not expired, in the order they joined (but `besides`)."""
        sql = (
            f"SELECT runner_id, started_at, lease_until - {self.NOW} FROM {self.PREFIX}runners"
            f" WHERE job_id = ? AND lease_until >= {self.NOW} ORDER BY started_at"
        )
        rows = self._read(lambda conn: conn.execute(sql, (job_id,)).fetchall())
        return [LiveRunner(RunnerId.parse(row[0]), row[1], row[2]) for row in rows if row[0] != besides]


class Heartbeat:
    """`with Heartbeat(ledger, runner, job_id, lease):` the runner is registered with the job, and its leases renewed
    every `lease / 3` seconds on a thread of its own, until the block ends and they are given back. A renewal that
    fails (the ledger unreachable) is logged and tried again at the next beat."""

    def __init__(self, ledger: Leasing, runner: RunnerId, job_id: str, lease: float) -> None:
        self.ledger, self.runner, self.job_id, self.lease = ledger, runner, job_id, lease
        self.others: list[LiveRunner] = []
        """The job's other runners, live when this one joined."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"keel-heartbeat-{runner.token}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.others = self.ledger.join(self.job_id, self.runner.key, self.lease)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.ledger.leave(self.runner.key)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.ledger.renew(self.runner.key, self.lease)
            except Exception as exc:  # the next beat tries again; the lease says how long that may take
                logger.warning("%s could not renew its leases (%s); trying again", self.runner, exc)
