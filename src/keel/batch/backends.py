"""Which batch ledger a command uses: a file it was given, else the configured PostgreSQL, else SQLite."""

from __future__ import annotations

from pathlib import Path

from ..config import load_settings
from ..stores.home import ensure_home, keel_home
from .ledger import SQLLedger
from .sqlite_ledger import SQLiteLedger

__all__ = ["DEFAULT_FILENAME", "existing_ledger", "open_ledger"]

DEFAULT_FILENAME = "batches.sqlite3"


def open_ledger(path: Path | None = None) -> SQLLedger:
    """The ledger at `path` (a SQLite file) if given; else the PostgreSQL of `KEEL_DATABASE_URL` (or keel.toml's
    `database_url`) when one is configured; else `batches.sqlite3` under `$KEEL_HOME` or `./.keel`. A configured
    PostgreSQL that cannot be reached raises `StoreUnavailable`: there is no silent fallback to a local file."""
    if path is not None:
        return SQLiteLedger(path)
    url = load_settings().database_url
    if url:
        from .postgres import PostgresLedger  # the optional `postgres` extra

        return PostgresLedger(url)
    home = keel_home()
    ensure_home(home)
    return SQLiteLedger(home / DEFAULT_FILENAME)


def existing_ledger(path: Path | None = None) -> SQLLedger | None:
    """The ledger `open_ledger(path)` would open, if there is one already: a SQLite file is not created (a dry run
    writes nothing), None when it does not exist; a configured PostgreSQL is opened."""
    if path is None and not load_settings().database_url:
        path = keel_home() / DEFAULT_FILENAME
    if path is not None and not path.exists():
        return None
    return open_ledger(path)
