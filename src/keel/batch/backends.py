"""Which ledger a command uses: a file it was given, else the configured PostgreSQL, else a SQLite file under
`$KEEL_HOME` (or `./.keel`). `BATCH_LEDGERS` chooses the batch ledger; `keel.bulk` has its own for the run ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ..config import load_settings
from ..stores.home import ensure_home, keel_home
from .ledger import SQLLedger
from .sqlite_ledger import SQLiteLedger

__all__ = ["BATCH_LEDGERS", "DEFAULT_FILENAME", "LedgerChoice", "existing_ledger", "open_ledger"]

DEFAULT_FILENAME = "batches.sqlite3"
L = TypeVar("L")


@dataclass(frozen=True)
class LedgerChoice(Generic[L]):
    """One kind of ledger: its default file name, and how to open it on SQLite and on PostgreSQL (the optional
    `postgres` extra, imported only when one is configured)."""

    filename: str
    sqlite: Callable[[Path], L]
    postgres: Callable[[str], L]

    def open(self, path: Path | None = None) -> L:
        """The ledger at `path` (a SQLite file) if given; else the PostgreSQL of `KEEL_DATABASE_URL` (or keel.toml's
        `database_url`) when one is configured; else `filename` under `$KEEL_HOME` or `./.keel`. A configured
        PostgreSQL that cannot be reached raises `StoreUnavailable`: there is no silent fallback to a local file."""
        if path is not None:
            return self.sqlite(path)
        url = load_settings().database_url
        if url:
            return self.postgres(url)
        home = keel_home()
        ensure_home(home)
        return self.sqlite(home / self.filename)

    def existing(self, path: Path | None = None) -> L | None:
        """The ledger `open(path)` would open, if there is one already: a SQLite file is not created (a dry run
        writes nothing), None when it does not exist; a configured PostgreSQL is opened."""
        if path is None and not load_settings().database_url:
            path = keel_home() / self.filename
        if path is not None and not path.exists():
            return None
        return self.open(path)


def _postgres_ledger(url: str) -> SQLLedger:
    from .postgres import PostgresLedger

    return PostgresLedger(url)


BATCH_LEDGERS: LedgerChoice[SQLLedger] = LedgerChoice(DEFAULT_FILENAME, SQLiteLedger, _postgres_ledger)
open_ledger = BATCH_LEDGERS.open
existing_ledger = BATCH_LEDGERS.existing
