"""Prompt caching, emulated: `cache_control` breakpoints write and read cache entries keyed by the prompt prefix.

- The prompt is read as blocks in the cache's order: tools, system, messages (`tokens.prompt_blocks`). A breakpoint is
  a `cache_control` on one of them (one on a block inside a `tool_result` marks the `tool_result`), plus the request's
  top-level `cache_control` (automatic caching), which marks the last cacheable block. At most `MAX_BREAKPOINTS`, and
  1-hour ones before 5-minute ones: otherwise the API's 400 (`check_breakpoints`, run by validation).
- An entry is keyed by a hash of the API key's scope, the model and the prompt up to and including its block (the
  blocks without their `cache_control` markers; for blocks of `messages`, `tool_choice` and `thinking` too, whose
  changes invalidate the messages cache). It lives 5 minutes or 1 hour from the start of the request that wrote or
  last read it.
- Reading: each breakpoint looks back over `LOOKBACK` block boundaries (itself included) for a live entry; the longest
  hit of all (A) is read, and every hit is refreshed.
- Writing: each breakpoint after A whose prefix reaches the model's minimum cacheable length writes an entry. As the
  API bills it: read A tokens, write B - A at 1 hour (B: the last 1-hour breakpoint written), write C - B at 5 minutes
  (C: the last breakpoint written); `input_tokens` is what follows, at least the request's own overhead
  (`tokens.REQUEST_OVERHEAD`, read as the start of the assistant turn after the last block: never cached).

A request plans its cache use first (`PromptCache.plan`, no change), is admitted by the rate limiter (cache writes
count toward ITPM, reads do not), then commits the plan (`PromptCache.commit`): a request refused with a 429 neither
writes nor refreshes anything.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from .clock import Clock
from .errors import invalid
from .tokens import PromptBlock

if TYPE_CHECKING:
    from .validation import ValidRequest

MAX_BREAKPOINTS = 4
LOOKBACK = 20  # block boundaries a breakpoint checks for a hit, itself included
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_UNCACHEABLE = frozenset({"thinking", "redacted_thinking"})
_PURGE_AT = 1024


@dataclass(frozen=True)
class Breakpoint:
    index: int  # into the request's prompt blocks
    ttl: str  # "5m" or "1h"


@dataclass(frozen=True)
class InputUsage:
    """How a request's input tokens split: uncached, written to the cache (by lifetime), read from it."""

    input_tokens: int
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @property
    def cache_creation(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def rate_limited(self) -> int:
        """The tokens that count toward the input-tokens rate limit: uncached input and cache writes."""
        return self.input_tokens + self.cache_creation


def _marker(block: Any) -> Any:
    """A block's `cache_control` (one on a block inside a `tool_result` marks the `tool_result`)."""
    if not isinstance(block, dict):
        return None
    marker = block.get("cache_control")
    if marker is None and block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        marker = next((inner["cache_control"] for inner in block["content"] if inner.get("cache_control")), None)
    return marker


def _cacheable(block: Any) -> bool:
    if isinstance(block, str):
        return bool(block)
    return block.get("type") not in _UNCACHEABLE and not (block.get("type") == "text" and not block.get("text"))


def check_breakpoints(body: dict[str, Any], blocks: tuple[PromptBlock, ...]) -> tuple[Breakpoint, ...]:
    """The request's breakpoints, in prompt order; raises the API's 400 for too many or for misordered lifetimes."""
    found: list[tuple[int, str, str]] = []  # block index, ttl, where (for the error)
    for index, prompt_block in enumerate(blocks):
        marker = _marker(prompt_block.block)
        if marker:
            found.append((index, marker.get("ttl") or "5m", f"{prompt_block.loc}.cache_control.ttl"))
    automatic = body.get("cache_control")
    slots = len(found)
    if automatic:
        slots += 1  # automatic caching takes a slot even where an explicit breakpoint already is
        last = next((i for i in reversed(range(len(blocks))) if _cacheable(blocks[i].block)), None)
        if last is not None and all(index != last for index, _, _ in found):
            found.append((last, automatic.get("ttl") or "5m", "cache_control.ttl"))
            found.sort()
    if slots > MAX_BREAKPOINTS:
        raise invalid(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {slots}.")
    seen_5m = False
    for _, ttl, where in found:
        if ttl == "1h" and seen_5m:
            raise invalid(f"{where}: a ttl='1h' must not come after a ttl='5m' cache_control block")
        seen_5m = seen_5m or ttl == "5m"
    return tuple(Breakpoint(index, ttl) for index, ttl, _ in found)


def _identity(block: Any) -> bytes:
    """A block as the cache compares it: without its `cache_control` markers."""
    if isinstance(block, dict):
        block = {name: value for name, value in block.items() if name != "cache_control"}
        if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            block["content"] = [
                {name: value for name, value in inner.items() if name != "cache_control"} for inner in block["content"]
            ]
    return json.dumps(block, sort_keys=True, separators=(",", ":")).encode()


def _prefixes(scope: str, request: ValidRequest, upto: int) -> list[tuple[bytes, int]]:
    """For each block up to `upto`: the hash of the prompt up to and including it, and its tokens."""
    body = request.body
    digest = hashlib.blake2b(to_json([scope, request.model.id]), digest_size=16)
    tokens = 0
    in_messages = False
    prefixes = []
    for prompt_block in request.blocks[: upto + 1]:
        if not in_messages and prompt_block.loc.startswith("messages"):
            in_messages = True  # tool_choice and thinking changes invalidate the messages cache
            digest.update(to_json([body.get("tool_choice"), body.get("thinking")]))
        digest.update(_identity(prompt_block.block))
        tokens += prompt_block.tokens
        prefixes.append((digest.digest(), tokens))
    return prefixes


@dataclass(frozen=True)
class CachePlan:
    """What a request reads from and writes to the cache: its usage, and the changes `commit` makes."""

    usage: InputUsage
    now: float = 0.0
    hits: tuple[bytes, ...] = ()
    writes: tuple[tuple[bytes, float], ...] = ()  # key, lifetime in seconds


@dataclass
class _Entry:
    lifetime: float
    expires_at: float


class PromptCache:
    """Cache entries of every scope (API key), expiring on the clock; thread-safe."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._entries: dict[bytes, _Entry] = {}
        self._purge_at = _PURGE_AT  # expired entries are dropped once there are this many entries
        self._lock = threading.Lock()

    def plan(self, scope: str, request: ValidRequest) -> CachePlan:
        """How `request`, sent with an API key of `scope`, would use the cache now; changes nothing."""
        if not request.breakpoints:
            return CachePlan(InputUsage(request.input_tokens))
        now = self.clock.now()
        prefixes = _prefixes(scope, request, request.breakpoints[-1].index)
        hits: dict[int, bytes] = {}
        with self._lock:
            for point in request.breakpoints:
                for index in range(point.index, max(-1, point.index - LOOKBACK), -1):
                    entry = self._entries.get(prefixes[index][0])
                    if entry is not None and entry.expires_at > now:
                        hits[index] = prefixes[index][0]
                        break
        read_at = max(hits, default=-1)
        read = prefixes[read_at][1] if hits else 0
        writes = [
            point
            for point in request.breakpoints
            if point.index > read_at and prefixes[point.index][1] >= request.model.min_cache_tokens
        ]
        hour = next((prefixes[p.index][1] for p in reversed(writes) if p.ttl == "1h"), read)
        cached = prefixes[writes[-1].index][1] if writes else read
        usage = InputUsage(
            input_tokens=request.input_tokens - cached,
            cache_write_5m=cached - hour,
            cache_write_1h=hour - read,
            cache_read=read,
        )
        return CachePlan(
            usage,
            now,
            tuple(hits.values()),
            tuple((prefixes[p.index][0], TTL_SECONDS[p.ttl]) for p in writes),
        )

    def commit(self, plan: CachePlan) -> None:
        """Refresh the entries the plan read and write the ones it creates."""
        if not plan.hits and not plan.writes:
            return
        with self._lock:
            for key in plan.hits:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.expires_at = max(entry.expires_at, plan.now + entry.lifetime)
            for key, lifetime in plan.writes:
                self._entries[key] = _Entry(lifetime, plan.now + lifetime)
            if len(self._entries) >= self._purge_at:
                self._entries = {key: e for key, e in self._entries.items() if e.expires_at > plan.now}
                self._purge_at = max(_PURGE_AT, 2 * len(self._entries))
