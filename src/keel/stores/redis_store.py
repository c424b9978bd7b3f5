"""The at-most-once tool store on Redis: one store for every process and host that uses the same Redis.

Each call's state is two keys (see `tools.lua`, the one script that reads and writes them, atomically):
- the record, a hash that stays until it is forgotten (`release`): tool, status, owner, attempt, result, times;
- the lease, `SET NX` with a TTL while the call runs, renewed by its owner. A crashed claimer stops renewing,
  the lease key expires, and the record, still "claimed", is then reported as outcome unknown
  (`ToolOutcomeUnknown`), exactly as the SQLite store does.

Time is the Redis server's (`TIME`, and key expiry): the clients' clocks never enter.

Durability is Redis's: a claim or result is as safe as the server keeps it. Run Redis with an append-only file
(`appendonly yes`; `appendfsync always` for a claim that survives a power cut, `everysec` loses at most a second)
or a restart forgets every record, and replays become runs. A failover to a replica that had not yet received a
write forgets it the same way.

Failure behaviour: an unreachable Redis at start raises `StoreUnavailable` naming the URL without its password;
mid-run, every operation is retried for `reconnect_for` seconds (a warning on the first retry), then raises
`StoreUnavailable`. A tool never runs without its claim recorded. Needs the `redis` extra (redis-py 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:
    raise ImportError("the Redis tool store needs redis-py 8: pip install 'claude-keel[redis]'") from exc

from .._exceptions import ConfigError
from .._reconnect import Reconnecting
from .base import Claim, Status, ToolCallRecord

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

DEFAULT_PREFIX = "keel:tools"
SCRIPT = resources.files(__package__).joinpath("tools.lua").read_text(encoding="utf-8")
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class RedisStore:
    """`ToolCallStore` in the Redis at `url` (`redis://[user:password@]host:port/db`, `rediss://`, `unix://`),
    under keys `{prefix}:{<dedup key>}` and `{prefix}:{<dedup key>}:lease` (the braces keep both in one
    cluster slot). `url=None`: the configured one (`KEEL_REDIS_URL` or keel.toml).

    Connects and pings at once: `StoreUnavailable` if that fails. `connect_timeout` and `command_timeout` bound
    each connection attempt and command; `reconnect_for`, how long an operation keeps retrying a lost Redis."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        reconnect_for: float = 30.0,
        connect_timeout: float = 1.0,
        command_timeout: float = 2.0,
    ) -> None:
        if url is None:
            from ..config import REDIS_URL_ENV, load_settings

            url = load_settings().redis_url
            if url is None:
                raise ConfigError(REDIS_URL_ENV, "no Redis configured (set it, or redis_url in keel.toml)")
        self._net = Reconnecting("at-most-once tool store", url, _UNREACHABLE, reconnect_for)
        self.url = self._net.url
        """The address without its password: safe to print."""
        self.prefix = prefix
        try:
            self._redis = redis.Redis.from_url(
                url,
                retry=Retry(NoBackoff(), 0),  # the retrying is ours, bounded by reconnect_for
                socket_connect_timeout=connect_timeout,
                socket_timeout=command_timeout,
                decode_responses=True,
            )
        except ValueError as exc:
            raise ConfigError(self.url, f"not a usable Redis URL ({self._net.reason(exc)})") from None
        self._script = self._redis.register_script(SCRIPT)
        self._closed = False
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            self._redis.close()
            raise self._net.unavailable(exc) from None

    def _run(self, key: str, *args: str | int | float) -> tuple[int, ToolCallRecord | None, ToolCallRecord | None]:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        tag = f"{self.prefix}:{{{key}}}"
        keys, argv = [tag, f"{tag}:lease"], list(args)
        code, row, previous = self._net.call(lambda: self._script(keys, argv))
        return int(code), _record(key, row), _record(key, previous)

    # -- ToolCallStore -----------------------------------------------------------------------------

    def claim(self, key: str, *, tool: str, owner: str, lease: float, takeover: bool = False) -> Claim:
        code, record, previous = self._run(key, "claim", owner, tool, _millis(lease), int(takeover))
        if record is None:
            raise RuntimeError(f"{self.url}: tool call {key} has a lease but no record; delete its keys by hand")
        return Claim(code == 1, record, previous=previous, expired=code == 2)

    def complete(self, key: str, *, owner: str, result_json: str, status: Status = "done") -> bool:
        if status not in ("done", "error"):
            raise ValueError(f"complete() records 'done' or 'error', not {status!r}")
        return self._run(key, "complete", owner, status, result_json)[0] == 1

    def release(self, key: str, *, owner: str) -> bool:
        return self._run(key, "release", owner)[0] == 1

    def renew(self, key: str, *, owner: str, lease: float) -> bool:
        return self._run(key, "renew", owner, _millis(lease))[0] == 1

    def get(self, key: str) -> ToolCallRecord | None:
        return self._run(key, "get")[1]

    # -- housekeeping ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connections. Later calls raise."""
        self._closed = True
        self._redis.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _record(key: str, flat: Sequence[Any]) -> ToolCallRecord | None:
    if not flat:
        return None
    row = dict(zip(flat[::2], flat[1::2], strict=True))
    completed = row.get("completed_at")
    return ToolCallRecord(
        key=key,
        tool=row["tool"],
        status=row["status"],
        owner=row["owner"],
        attempt=int(row["attempt"]),
        result_json=row.get("result"),
        claimed_at=float(row["claimed_at"]),
        expires_at=float(row["expires_at"]),
        completed_at=float(completed) if completed is not None else None,
    )
