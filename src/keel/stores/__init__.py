"""State behind keel's at-most-once tools, and the helpers shared stores are built on.

`ToolCallStore` is the small interface; `SQLiteStore` (a file under `.keel/`, or `$KEEL_HOME`) is the
embedded default, `MemoryStore` the in-process one and `RedisStore` the shared one (`KEEL_REDIS_URL`; it
needs the `redis` extra and is imported when first named). `keel.stores.postgres` holds the PostgreSQL
connection and schema helpers the batch ledger uses.
"""

from typing import TYPE_CHECKING, Any

from .base import Claim, Status, ToolCallRecord, ToolCallStore
from .home import KEEL_HOME_ENV, keel_home
from .memory import MemoryStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .redis_store import RedisStore


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # the optional `redis` extra: imported only when asked for
        from .redis_store import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KEEL_HOME_ENV",
    "Claim",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Status",
    "ToolCallRecord",
    "ToolCallStore",
    "keel_home",
]
