"""State behind keel's at-most-once tools (and, later, the limiter and the batch ledger).

`ToolCallStore` is the small interface; `SQLiteStore` (a file under `.keel/`, or `$KEEL_HOME`) is the
embedded default and `MemoryStore` the in-process one. Shared backends (Redis, PostgreSQL) implement the
same protocol.
"""

from .base import Claim, Status, ToolCallRecord, ToolCallStore
from .home import KEEL_HOME_ENV, keel_home
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "KEEL_HOME_ENV",
    "Claim",
    "MemoryStore",
    "SQLiteStore",
    "Status",
    "ToolCallRecord",
    "ToolCallStore",
    "keel_home",
]
