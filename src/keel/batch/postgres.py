"""The batch ledger on PostgreSQL: one ledger for every runner on every host that uses the same database.

`PostgresBackend` is what a ledger on PostgreSQL needs (the pool, its schema created and versioned, transactions and
reads), as `SQLiteBackend` is on SQLite; `PostgresLedger` is the batch ledger on it, and
`keel.bulk.postgres.PostgresRunLedger` the run ledger.

The same `Ledger`, the same logic and SQL (`SQLLedger`) as the SQLite ledger; here connections come from a pool
(`keel.stores.postgres`), `?` placeholders become psycopg's, results are staged with `COPY`, and rows in input
order are read by a server-side cursor that, after a reconnect, goes on from the next line. The tables live in
the schema the connection's `search_path` selects (`?options=-csearch_path%3Dmy_schema` in the URL picks
another), created on first use and versioned in `keel_schema` (component "batch ledger", version 3, as
SQLite's `user_version`). Runners claim shards with `SELECT … FOR UPDATE SKIP LOCKED`, and their leases run on
the server's clock.

A server restarting mid-run makes every ledger operation wait and retry for `reconnect_for` seconds, with a
warning naming the URL without its password; nothing goes on to the next API call until the ledger has recorded
the last one. Needs the `postgres` extra.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import psycopg

from .._exceptions import ConfigError
from ..stores.postgres import NOW, SKIP_LOCKED, TRANSIENT, Postgres
from .jobs import Connection, T
from .ledger import RESULT_COLUMNS, SCHEMA_VERSION, STAGE, SQLLedger

__all__ = ["COMPONENT", "SCHEMA", "PostgresBackend", "PostgresLedger", "pg_job_tables"]

COMPONENT = "batch ledger"
PAGE = 2000  # rows fetched at a time by a read in input order

logger = logging.getLogger("keel.stores")


def pg_job_tables(prefix: str = "") -> str:
    """The tables of every job ledger on PostgreSQL (as `keel.batch.sqlite_ledger.job_tables` on SQLite), their names
    starting with `prefix`."""
    return f"""
CREATE TABLE {prefix}jobs (
    job_id TEXT PRIMARY KEY, input_path TEXT NOT NULL, options TEXT NOT NULL, status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE {prefix}rejects (
    job_id TEXT NOT NULL, line BIGINT NOT NULL, custom_id TEXT, reason TEXT NOT NULL, PRIMARY KEY (job_id, line)
);
CREATE TABLE {prefix}runners (
    runner_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL
);
"""


SCHEMA = (
    pg_job_tables()
    + """
CREATE TABLE items (
    job_id TEXT NOT NULL, custom_id TEXT NOT NULL, line BIGINT NOT NULL, params TEXT NOT NULL,
    size BIGINT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, shard_id BIGINT,
    result_type TEXT, error_type TEXT, error_message TEXT, stop_reason TEXT, model TEXT,
    input_tokens BIGINT, output_tokens BIGINT, cache_write_5m_tokens BIGINT, cache_write_1h_tokens BIGINT,
    cache_read_tokens BIGINT,
    cost_batch DOUBLE PRECISION, cost_standard DOUBLE PRECISION, message TEXT,
    PRIMARY KEY (job_id, custom_id)
);
CREATE INDEX items_by_line ON items (job_id, line);
CREATE INDEX items_by_shard ON items (shard_id, line);
CREATE INDEX items_by_state ON items (job_id, state);
CREATE TABLE shards (
    shard_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id TEXT NOT NULL, round INTEGER NOT NULL,
    state TEXT NOT NULL, batch_id TEXT UNIQUE, requests BIGINT NOT NULL, bytes BIGINT NOT NULL,
    submit_started_at DOUBLE PRECISION, submitted_at DOUBLE PRECISION, ended_at DOUBLE PRECISION,
    counts TEXT NOT NULL DEFAULT '{}', lease_owner TEXT, lease_until DOUBLE PRECISION
);
CREATE INDEX shards_by_job ON shards (job_id, shard_id);
"""
)

_RESULTS = ", ".join(RESULT_COLUMNS)


class PostgresBackend:
    """A ledger in the PostgreSQL at `url` (default: the configured one, `KEEL_DATABASE_URL` or keel.toml): the pool,
    the schema, transactions and reads. Connects at once: `StoreUnavailable` naming the URL without its password if it
    cannot; a schema of another version is refused (`ValueError`)."""

    NOW = NOW
    SKIP_LOCKED = SKIP_LOCKED
    COMPONENT: ClassVar[str]
    """What the ledger is called in messages and in `keel_schema` ("batch ledger")."""
    SCHEMA_VERSION: ClassVar[int]
    SCHEMA: ClassVar[str]

    def __init__(self, url: str | None = None, *, reconnect_for: float = 60.0, max_size: int = 4) -> None:
        if url is None:
            from ..config import DATABASE_URL_ENV, load_settings

            url = load_settings().database_url
            if url is None:
                raise ConfigError(DATABASE_URL_ENV, "no PostgreSQL configured (set it, or database_url in keel.toml)")
        self._pg = Postgres(url, store=self.COMPONENT, reconnect_for=reconnect_for, max_size=max_size)
        self.url = self.where = self._pg.url
        try:
            self._pg.migrate(self.COMPONENT, self.SCHEMA_VERSION, self.SCHEMA)
        except BaseException:
            self._pg.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def close(self) -> None:
        self._pg.close()

    def _write(self, body: Callable[[Connection], T], *, again: bool = True) -> T:
        if again:
            return self._pg.write(lambda conn: body(_Qmark(conn)))
        try:  # a body that consumes its input cannot be run again: a lost connection is raised at once
            with self._pg.pool.connection() as conn, conn.transaction():
                return body(_Qmark(conn))
        except TRANSIENT as exc:
            raise self._pg.net.unavailable(exc) from None

    def _read(self, body: Callable[[Connection], T]) -> T:
        return self._pg.read(lambda conn: body(_Qmark(conn)))

    def _by_line(self, sql: str, params: Callable[[int], tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """One pass of a server-side cursor, fetched `PAGE` rows at a time. A connection lost on the way is waited
        for (as any operation is) and the read goes on from the next line, on a new cursor."""
        after = 0
        while True:
            try:
                with self._pg.pool.connection() as conn, conn.transaction(), conn.cursor(name="keel_by_line") as rows:
                    rows.itersize = PAGE
                    rows.execute(_placeholders(sql), params(after))
                    for row in rows:
                        after = row[0]
                        yield row
                return
            except TRANSIENT as lost:
                logger.warning("%s; reading on after line %d", self._pg.net.unavailable(lost), after)
                self._pg.read(lambda conn: conn.execute("SELECT 1"))  # waits for the server, for a bounded time


class PostgresLedger(PostgresBackend, SQLLedger):
    """`Ledger` in PostgreSQL: see `PostgresBackend`."""

    COMPONENT = COMPONENT
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = SCHEMA
    APPLY_RESULTS = (
        f"UPDATE items SET ({_RESULTS}) = ({', '.join(f'staged.{name}' for name in RESULT_COLUMNS)})"
        f" FROM (SELECT DISTINCT ON (custom_id) * FROM {STAGE} ORDER BY custom_id, seq DESC) AS staged"
        " WHERE items.shard_id = ? AND items.custom_id = staged.custom_id"
    )

    def _stage_results(self, conn: Connection, rows: Iterator[tuple[Any, ...]]) -> None:
        assert isinstance(conn, _Qmark)
        conn.execute(
            f"CREATE TEMP TABLE {STAGE} AS SELECT 0::BIGINT AS seq, custom_id, {_RESULTS} FROM items WITH NO DATA"
        )
        with conn.conn.cursor().copy(f"COPY {STAGE} (seq, custom_id, {_RESULTS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(f"ANALYZE {STAGE}")


class _Qmark:
    """A psycopg connection that takes the ledger's `?` placeholders."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = None, /) -> psycopg.Cursor[Any]:
        return self.conn.execute(_placeholders(sql), params)


@functools.lru_cache(maxsize=128)
def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")
