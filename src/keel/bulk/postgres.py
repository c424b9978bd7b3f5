"""The run ledger on PostgreSQL (`KEEL_DATABASE_URL`): one ledger of `keel run` jobs for every runner on every host
that uses the same database.

The same logic and SQL (`SQLRunLedger`) as the SQLite run ledger, on the batch ledger's PostgreSQL backend
(`keel.batch.postgres.PostgresBackend`: a pool, reconnecting, rows in input order by a server-side cursor). Its tables
(`run_jobs`, `run_items`, `run_rejects`, `run_runners`) sit beside the batch ledger's in the schema the connection's
`search_path` selects, created on first use and versioned in `keel_schema` (component "run ledger"). Needs the
`postgres` extra.
"""

from __future__ import annotations

from ..batch.postgres import PostgresBackend, pg_job_tables
from .ledger import SCHEMA_VERSION, SQLRunLedger

__all__ = ["SCHEMA", "PostgresRunLedger"]

SCHEMA = (
    pg_job_tables("run_")
    + """
CREATE TABLE run_items (
    job_id TEXT NOT NULL, custom_id TEXT NOT NULL, line BIGINT NOT NULL, params TEXT NOT NULL,
    size BIGINT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, request_id TEXT,
    error_type TEXT, error_message TEXT, stop_reason TEXT, model TEXT,
    input_tokens BIGINT, output_tokens BIGINT, cache_write_5m_tokens BIGINT, cache_write_1h_tokens BIGINT,
    cache_read_tokens BIGINT, cost DOUBLE PRECISION, unseen_cost DOUBLE PRECISION NOT NULL DEFAULT 0, message TEXT,
    sent_at DOUBLE PRECISION, done_at DOUBLE PRECISION, lease_owner TEXT, lease_until DOUBLE PRECISION,
    PRIMARY KEY (job_id, custom_id)
);
CREATE INDEX run_items_by_line ON run_items (job_id, line);
CREATE INDEX run_items_by_state ON run_items (job_id, state, line);
CREATE INDEX run_items_leased ON run_items (lease_owner) WHERE lease_until IS NOT NULL;
"""
)


class PostgresRunLedger(PostgresBackend, SQLRunLedger):
    """The run ledger in the PostgreSQL at `url` (default: the configured one): see `PostgresBackend`."""

    COMPONENT = "run ledger"
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = SCHEMA
