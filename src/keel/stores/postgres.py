"""PostgreSQL for keel's shared state: a connection pool, schema versioning and reconnecting, for any ledger.

A store built on it (the batch ledger; later the bulk ledger) makes one `Postgres` for its URL and runs every
operation through `write` (one transaction) or `read`: a lost connection (a server restarting, a network cut) is
retried for `reconnect_for` seconds, with a warning naming the store and its URL without the password, then
raised as `StoreUnavailable`. Nothing after a failed operation runs until it is recorded. Each operation given to
`write` must be safe to run again: its first try may have committed with only the reply lost.

Schema versions live in one table, `keel_schema` (component, version), in the schema the connection's
`search_path` selects, so several stores (and several test schemas) share a database without meeting. `migrate`
creates a component's tables on first use under an advisory lock (two processes starting at once create them
once) and refuses a version it does not know with a clear error.

Needs the `postgres` extra (psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError as exc:
    raise ImportError("keel's PostgreSQL stores need psycopg 3: pip install 'claude-keel[postgres]'") from exc

from .._reconnect import Reconnecting

__all__ = ["NOW", "SCHEMA_TABLE", "SKIP_LOCKED", "Postgres"]

T = TypeVar("T")

SCHEMA_TABLE = "keel_schema"
TRANSIENT = (psycopg.OperationalError,)  # a lost or refused connection, a server shutting down, a pool timeout
NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
"""SQL: the server's clock in Unix seconds (a lease's times: the same for every host, whatever their clocks say)."""
SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
"""What a claim's SELECT ends with: rows another transaction is claiming are passed over, not waited for."""

logger = logging.getLogger("keel.stores")
# The pool logs each failed connection attempt ("error connecting in ...", "discarding closed connection"), which
# Python's last-resort handler prints to the stderr of a program that configured no logging: a line per retry, and
# the connection's repr. keel's own warning says once that the store is unreachable, and again when it answers; a
# program's own logging configuration still receives the pool's records.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


class Postgres:
    """Connections to the PostgreSQL at `url` (`postgresql://user:password@host:port/db?options=...`) for one
    store, named `store` in messages. Connects at once: `StoreUnavailable` naming the URL without its password
    if that fails. `max_size` connections at most; `connect_timeout` bounds each connection attempt."""

    def __init__(
        self,
        url: str,
        *,
        store: str,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        reconnect_for: float = 60.0,
    ) -> None:
        self.net = Reconnecting(store, url, TRANSIENT, reconnect_for)
        self.url = self.net.url
        """The address without its password: safe to print."""
        options: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, round(connect_timeout))}
        try:  # one connection first, for its error: the pool's own would only say it timed out
            psycopg.connect(url, **options).close()
        except psycopg.Error as exc:
            raise self.net.unavailable(exc) from None
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs=options,
            timeout=connect_timeout,
            name=f"keel {store}",
            open=True,
        )

    def write(self, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`body(connection)` in one transaction, retried while the server cannot be reached. Connections are not
        checked before use (that would cost a round trip each time): one broken by a server restart fails its
        first statement, which is retried on a new connection, after the warning that says what happened."""

        def once() -> T:
            with self.pool.connection() as conn, conn.transaction():
                return body(conn)

        return self.net.call(once)

    def read(self, body: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`body(connection)` outside a transaction (each statement its own), retried like `write`."""

        def once() -> T:
            with self.pool.connection() as conn:
                return body(conn)

        return self.net.call(once)

    def migrate(self, component: str, version: int, ddl: str) -> None:
        """Create `component`'s tables (`ddl`) on first use and record `version`; raise `ValueError` for a
        schema of another version (written by another keel)."""

        def body(conn: psycopg.Connection[Any]) -> None:
            # serialises first uses in this schema: the lock is keyed by the schema and the component
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(COALESCE(current_schema(), '') || %s))", (component,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (component TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                " migrated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            row = conn.execute(f"SELECT version FROM {SCHEMA_TABLE} WHERE component = %s", (component,)).fetchone()
            if row is None:
                conn.execute(ddl.encode())  # several statements: no parameters, the simple query protocol
                conn.execute(f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES (%s, %s)", (component, version))
                logger.info("%s at %s: created its tables (schema version %d)", component, self.url, version)
            elif row[0] != version:
                raise ValueError(
                    f"{self.url}: a {component} of schema version {row[0]}, written by another keel version (this "
                    f"one uses version {version}); finish its jobs with that version, or use another database or schema"
                )

        self.write(body)

    def close(self) -> None:
        self.pool.close()
