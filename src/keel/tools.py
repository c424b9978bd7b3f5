"""At-most-once execution of side-effecting tools.

The API has no idempotency key for Messages, and the SDK retries on its own. When a request is retried,
or a conversation replayed after a crash, the model produces the same tool call again (with a new
`tool_use` id). Running `send_email` or `charge_card` a second time is the bug this module prevents::

    from keel.tools import at_most_once, tool_result

    @at_most_once(name="send_email")
    def send_email(input: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": mailer.send(input["to"], input["body"])}

    for block in message.content:
        if block.type == "tool_use":
            results.append(tool_result(block, [send_email], conversation=conversation_id))

How it works: each call gets a dedup key; the first caller *claims* the key in a store, runs the function
and records the JSON result; every later call with the same key gets the recorded result back
(`Execution.replayed` is true) without running the function. Concurrent callers of the same key — threads
or processes sharing the store — wait for the winner's result instead of running it.

The dedup key (`AtMostOnce.key_for`):
- default: sha256 of the tool name, the canonical JSON of the input (`canonical_json`) and the
  conversation key the caller passes. The `tool_use` id is deliberately left out: a regenerated call has a
  new id. The conversation key is required, so that the same input in two conversations (two users
  sending "hi" to the same address) runs twice, as it should.
- or the caller's own key (`key="order-42"`, or `key=` a function of the input on the decorator), scoped
  by tool name so that `charge_card` and `send_receipt` may both use the order id.

Choices, and their caveats:
- The function raises an `Exception`: nothing is recorded as success and the claim is released, so a later
  attempt runs it again. This assumes a raising tool did not perform its side effect (or that doing it again
  is harmless). A tool that may have acted before failing should return a result saying so, or the caller
  can opt in to `store_errors=True`: the error is then recorded and replayed (`ToolReplayedError`, or an
  `is_error` tool_result) instead of retried.
- The function is interrupted (`KeyboardInterrupt`, `SystemExit`) or the process dies: the claim is kept
  and nobody runs the tool until its lease runs out. Then the outcome is *unknown* — the side effect may
  or may not have happened — and the next caller gets `ToolOutcomeUnknown` rather than a silent second run.
  Resolve it by checking the outside world and calling `resolve(key, value)` (it happened) or
  `forget(key)` (it did not), or let callers run it again with `takeover=True` if the tool is safe to
  repeat.
- A lease is renewed by a background thread while the function runs, so a long tool keeps its claim and
  a crashed one loses it `lease` seconds after its last renewal. A claim lost anyway (the process was
  frozen for longer than the lease and another caller took over) is logged as a warning when the late
  result arrives; the store keeps the new owner's result.
- Values go through JSON both on the first run and on replays, so both look the same (tuples come back as
  lists). A result that is not JSON-serialisable is recorded as an error (the side effect already happened,
  so the key must not run again) and raises `ToolResultNotSerializable`.
- Stored rows hold the key, tool name, status, result JSON and timestamps; not the tool input (only its
  hash) and never an API key. Results may hold personal data: the store is as sensitive as they are.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

from keel._exceptions import (
    AtMostOnceError,
    ToolOutcomeUnknown,
    ToolReplayedError,
    ToolResultNotSerializable,
    ToolWaitTimeout,
)
from keel.config import load_settings
from keel.stores import SQLiteStore, ToolCallRecord, ToolCallStore, keel_home
from keel.stores.sqlite import DEFAULT_FILENAME

if TYPE_CHECKING:
    from anthropic.types import ToolResultBlockParam

    from keel.stores.redis_store import RedisStore

__all__ = [
    "AtMostOnce",
    "AtMostOnceError",
    "Execution",
    "ToolOutcomeUnknown",
    "ToolReplayedError",
    "ToolResultNotSerializable",
    "ToolWaitTimeout",
    "at_most_once",
    "canonical_json",
    "default_store",
    "tool_result",
]

logger = logging.getLogger("keel.tools")

R = TypeVar("R")

KEY_VERSION = "keel.tools/1"
"""Part of every default key: changing how keys are made must not make old results look like new ones."""

DEFAULT_LEASE = 60.0
DEFAULT_WAIT_TIMEOUT = 30.0


# -- keys ------------------------------------------------------------------------------------------------


def _canonical(value: object) -> object:
    # bool before int: True is an int in Python but a different JSON value.
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"canonical JSON has no {value!r}")
        # 1.0 and 1 are the same JSON number (RFC 8785 writes both as 1); so are -0.0 and 0, and 1e16 and
        # 10000000000000000. int() of an integral float is exact.
        if value.is_integer():
            return int(value)
        return value  # repr() of a float is the shortest string that reads back to it: stable
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"canonical JSON object keys must be strings, not {type(k).__name__}")
            out[k] = _canonical(v)
        return out
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"canonical JSON cannot hold {type(value).__name__}")


def canonical_json(value: object) -> str:
    """One string per JSON value: keys sorted, no whitespace, integral floats written as integers, every
    non-ASCII character escaped (so the bytes do not depend on an encoding, and lone surrogates survive).
    Strings are compared as given, without Unicode normalisation: two inputs that differ only in NFC/NFD
    form get different keys (they run twice rather than risk merging two genuinely different inputs).
    Raises `TypeError`/`ValueError` for what JSON cannot hold (NaN, infinities, non-string keys, objects)."""
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _result_json(value: object) -> str:
    # Key order kept (it reads better in a tool_result); canonical form is only needed for keys.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _new_owner() -> str:
    """A claim token: unique per attempt, and says where the attempt ran (for `ToolOutcomeUnknown`)."""
    return f"{socket.gethostname()}/pid{os.getpid()}/{uuid.uuid4().hex[:16]}"


# -- default store ---------------------------------------------------------------------------------------

_default_stores: dict[str, SQLiteStore | RedisStore] = {}
_default_lock = threading.Lock()


def default_store() -> SQLiteStore | RedisStore:
    """The process's store for tools that were given none, resolved when first needed: a `RedisStore` when a
    Redis is configured (`KEEL_REDIS_URL`, or `redis_url` in keel.toml: see `keel.config`), else the
    `SQLiteStore` at `<keel_home()>/tools.sqlite3` (`.keel/` here, or `$KEEL_HOME`). An unreachable Redis
    raises `StoreUnavailable`: there is no silent fallback to the local file."""
    redis_url = load_settings().redis_url
    where = f"redis {redis_url}" if redis_url else str((keel_home() / DEFAULT_FILENAME).resolve())
    with _default_lock:
        store = _default_stores.get(where)
        if store is None or store.closed:
            if redis_url:
                from keel.stores.redis_store import RedisStore

                store = RedisStore(redis_url)
            else:
                store = SQLiteStore(where)
            _default_stores[where] = store
        return store


# -- execution -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Execution(Generic[R]):
    """What `AtMostOnce.run` returns: the value, and whether it was replayed from the store.

    Attributes:
        value: the tool's result.
        replayed: True: the recorded result of an earlier run; the function did not run now.
        key: the dedup key (what `forget`, `resolve` and `lookup` take).
        tool: the tool's name.
        attempt: which claim produced the value: 1, or more after takeovers of expired claims.
        took_over: this call ran the tool after taking over an expired claim (`takeover=True`).
    """

    value: R
    replayed: bool
    key: str
    tool: str
    attempt: int
    took_over: bool = False


@dataclass(frozen=True, slots=True)
class _Failure:
    """A recorded failure, for `tool_result` to turn into an `is_error` block."""

    exc: BaseException
    info: dict[str, str]


class _Heartbeat:
    """Renews the lease while the tool runs, so only a dead (or frozen) owner loses its claim."""

    def __init__(self, store: ToolCallStore, key: str, owner: str, lease: float) -> None:
        self._store, self._key, self._owner, self._lease = store, key, owner, lease
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name=f"keel-lease-{key[:12]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                if not self._store.renew(self._key, owner=self._owner, lease=self._lease):
                    self.lost = True
                    logger.warning("lost the claim on tool call %s while it was running", self._key)
                    return
            except Exception:
                logger.warning("could not renew the lease of tool call %s", self._key, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _ToolUseLike(Protocol):
    """`anthropic.types.ToolUseBlock` or its beta twin: only these three fields are used."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def input(self) -> Mapping[str, object]: ...


class AtMostOnce(Generic[R]):
    """A tool function (tool input dict → JSON-serialisable result) that runs at most once per dedup key.

    `store`: a `ToolCallStore`; default `default_store()`, looked up at first use. `name`: the tool name
    (default the function's name; it must match the name the model calls). `key`: a function of the input
    giving the caller's own dedup key, instead of input + conversation. `lease`: seconds a claim survives
    without renewal (its owner renews it every lease/3 while running). `wait_timeout`: how long a caller
    waits for another caller's run of the same key. `takeover`: run again after an expired claim instead of
    raising `ToolOutcomeUnknown`. `store_errors`: record failures and replay them instead of retrying.
    """

    def __init__(
        self,
        fn: Callable[[dict[str, Any]], R],
        *,
        store: ToolCallStore | None = None,
        name: str | None = None,
        key: Callable[[dict[str, Any]], str] | None = None,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        takeover: bool = False,
        store_errors: bool = False,
        poll_interval: float = 0.005,
        max_poll_interval: float = 0.1,
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be positive")
        # Only name/doc/module/__wrapped__: copying fn.__dict__ could shadow this object's own attributes.
        functools.update_wrapper(self, fn, updated=())
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or ""
        if not self.name:
            raise ValueError("a tool needs a name: pass name=")
        self._store = store
        self.key_fn = key
        self.lease = lease
        self.wait_timeout = wait_timeout
        self.takeover = takeover
        self.store_errors = store_errors
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    @property
    def store(self) -> ToolCallStore:
        return self._store if self._store is not None else default_store()

    def __repr__(self) -> str:
        return f"AtMostOnce({self.name!r}, store={self._store!r})"

    # -- keys --------------------------------------------------------------------------------------------

    def key_for(self, input: Mapping[str, Any], *, conversation: str | None = None, key: str | None = None) -> str:
        """The dedup key of a call: the explicit `key` (or the decorator's key function) scoped by tool name,
        else sha256 of tool name + canonical input + `conversation`. One of them is required."""
        if key is None and self.key_fn is not None:
            key = self.key_fn(dict(input))
        if key is not None:
            if not isinstance(key, str) or not key:
                raise ValueError("an explicit key must be a non-empty string")
            # Contains ':' so it can never equal a default key (64 hex digits).
            return f"{self.name}:{key}"
        if conversation is None:
            raise TypeError(
                f"tool {self.name!r}: pass conversation= (the default key is tool + input + conversation) "
                "or key= (your own dedup key)"
            )
        material = canonical_json([KEY_VERSION, self.name, conversation, input])
        return hashlib.sha256(material.encode("ascii")).hexdigest()

    # -- running -----------------------------------------------------------------------------------------

    def __call__(self, input: Mapping[str, Any], *, conversation: str | None = None, key: str | None = None) -> R:
        """`run(...).value`."""
        return self.run(input, conversation=conversation, key=key).value

    def run(
        self,
        input: Mapping[str, Any],
        *,
        conversation: str | None = None,
        key: str | None = None,
        wait_timeout: float | None = None,
        takeover: bool | None = None,
    ) -> Execution[R]:
        """Run the tool unless this call already ran: then return its recorded result (`replayed=True`).

        Raises: whatever the tool raises (first run); `ToolReplayedError` (a recorded failure);
        `ToolWaitTimeout` (another caller is still running it); `ToolOutcomeUnknown` (an earlier attempt
        died mid-run, unless `takeover`); `ToolResultNotSerializable`."""
        outcome = self._run(input, conversation=conversation, key=key, wait_timeout=wait_timeout, takeover=takeover)
        if isinstance(outcome, _Failure):
            raise outcome.exc
        return outcome

    def _run(
        self,
        input: Mapping[str, Any],
        *,
        conversation: str | None,
        key: str | None,
        wait_timeout: float | None,
        takeover: bool | None,
    ) -> Execution[R] | _Failure:
        dedup = self.key_for(input, conversation=conversation, key=key)
        store = self.store
        take = self.takeover if takeover is None else takeover
        timeout = self.wait_timeout if wait_timeout is None else wait_timeout
        owner = _new_owner()
        started = time.monotonic()
        delay = self.poll_interval
        while True:
            claim = store.claim(dedup, tool=self.name, owner=owner, lease=self.lease, takeover=take)
            if claim.acquired:
                if claim.previous is not None:
                    logger.warning(
                        "tool %s: taking over expired claim on %s (attempt %d by %s); running it again",
                        self.name,
                        dedup,
                        claim.previous.attempt,
                        claim.previous.owner,
                    )
                return self._execute(input, dedup, owner, claim.record.attempt, took_over=claim.took_over)
            record = claim.record
            if record.status == "done":
                logger.debug("tool %s: replaying recorded result of %s", self.name, dedup)
                return Execution(
                    value=json.loads(record.result_json or "null"),
                    replayed=True,
                    key=dedup,
                    tool=self.name,
                    attempt=record.attempt,
                )
            if record.status == "error":
                replayed = ToolReplayedError(record)
                return _Failure(replayed, {"type": replayed.error_type, "message": replayed.error_message})
            if claim.expired:
                raise ToolOutcomeUnknown(record)
            waited = time.monotonic() - started
            if waited >= timeout:
                raise ToolWaitTimeout(record, waited)
            time.sleep(min(delay, timeout - waited))
            delay = min(delay * 2, self.max_poll_interval)

    def _execute(
        self, input: Mapping[str, Any], dedup: str, owner: str, attempt: int, *, took_over: bool
    ) -> Execution[R] | _Failure:
        store = self.store
        heartbeat = _Heartbeat(store, dedup, owner, self.lease)
        try:
            value = self.fn(dict(input))
        except Exception as exc:
            heartbeat.stop()
            if not self.store_errors:
                store.release(dedup, owner=owner)
                raise
            info = {"type": type(exc).__qualname__, "message": str(exc)}
            store.complete(dedup, owner=owner, result_json=json.dumps(info), status="error")
            return _Failure(exc, info)
        except BaseException:
            # Interrupted mid-run: the side effect may be half done. Keep the claim; once its lease runs out
            # the next caller gets ToolOutcomeUnknown, exactly as after a crash.
            heartbeat.stop()
            raise
        heartbeat.stop()
        try:
            result_json = _result_json(value)
        except (TypeError, ValueError) as exc:
            info = {"type": "ToolResultNotSerializable", "message": f"result is not JSON-serialisable: {exc}"}
            store.complete(dedup, owner=owner, result_json=json.dumps(info), status="error")
            raise ToolResultNotSerializable(
                f"tool {self.name!r} ran but its result is not JSON-serialisable ({exc}); recorded as failed so "
                f"it does not run again: fix the tool, then forget({dedup!r})",
                key=dedup,
                tool=self.name,
            ) from exc
        if not store.complete(dedup, owner=owner, result_json=result_json):
            logger.warning(
                "tool %s: claim on %s was lost while running (lease %.1fs expired and was taken over): "
                "the tool may have run twice; the store keeps the other run's result",
                self.name,
                dedup,
                self.lease,
            )
        return Execution(
            value=json.loads(result_json),
            replayed=False,
            key=dedup,
            tool=self.name,
            attempt=attempt,
            took_over=took_over,
        )

    # -- tool_use blocks ---------------------------------------------------------------------------------

    def tool_result(
        self, block: _ToolUseLike, *, conversation: str | None = None, key: str | None = None
    ) -> ToolResultBlockParam:
        """Run (or replay) a `tool_use` block and build its `tool_result` param. A string result is the
        content as is, anything else its JSON. A recorded failure (`store_errors=True`) becomes an
        `is_error` result with the same text on the first run and on replays; other errors propagate."""
        if block.name != self.name:
            raise ValueError(f"tool_use block calls {block.name!r}, this tool is {self.name!r}")
        outcome = self._run(block.input, conversation=conversation, key=key, wait_timeout=None, takeover=None)
        if isinstance(outcome, _Failure):
            return {
                "type": "tool_result",
                "tool_use_id": block.id,
                "content": f"{outcome.info['type']}: {outcome.info['message']}",
                "is_error": True,
            }
        value: object = outcome.value
        content = value if isinstance(value, str) else _result_json(value)
        return {"type": "tool_result", "tool_use_id": block.id, "content": content}

    # -- inspection and repair ---------------------------------------------------------------------------

    def lookup(self, key: str) -> ToolCallRecord | None:
        """The stored row of a dedup key (`Execution.key`, `AtMostOnceError.key`), if any."""
        return self.store.get(key)

    def forget(self, key: str) -> bool:
        """Delete a dedup key's row, whatever its state, so the next call runs the tool. For an outcome you
        checked did not happen, or a result you want recomputed. False if there was nothing to forget."""
        record = self.store.get(key)
        return record is not None and self.store.release(key, owner=record.owner)

    def resolve(self, key: str, value: R) -> None:
        """Record `value` as the result of a dedup key that has none (absent, or a claim that never
        finished): for a `ToolOutcomeUnknown` after checking the side effect did happen."""
        result_json = _result_json(value)
        store = self.store
        while True:
            record = store.get(key)
            if record is None:
                owner = _new_owner()
                if store.claim(key, tool=self.name, owner=owner, lease=self.lease).acquired:
                    store.complete(key, owner=owner, result_json=result_json)
                    return
                continue
            if record.status != "claimed":
                raise ValueError(f"tool call {key} is already {record.status}; forget() it first")
            if store.complete(key, owner=record.owner, result_json=result_json):
                return


@overload
def at_most_once(fn: Callable[[dict[str, Any]], R], /) -> AtMostOnce[R]: ...
@overload
def at_most_once(
    *,
    store: ToolCallStore | None = None,
    name: str | None = None,
    key: Callable[[dict[str, Any]], str] | None = None,
    lease: float = DEFAULT_LEASE,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    takeover: bool = False,
    store_errors: bool = False,
) -> Callable[[Callable[[dict[str, Any]], R]], AtMostOnce[R]]: ...
def at_most_once(
    fn: Callable[[dict[str, Any]], R] | None = None,
    /,
    *,
    store: ToolCallStore | None = None,
    name: str | None = None,
    key: Callable[[dict[str, Any]], str] | None = None,
    lease: float = DEFAULT_LEASE,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    takeover: bool = False,
    store_errors: bool = False,
) -> AtMostOnce[R] | Callable[[Callable[[dict[str, Any]], R]], AtMostOnce[R]]:
    """Decorator form of `AtMostOnce`: `@at_most_once` or `@at_most_once(store=..., name=..., key=...)`."""

    def wrap(f: Callable[[dict[str, Any]], R]) -> AtMostOnce[R]:
        return AtMostOnce(
            f,
            store=store,
            name=name,
            key=key,
            lease=lease,
            wait_timeout=wait_timeout,
            takeover=takeover,
            store_errors=store_errors,
        )

    return wrap(fn) if fn is not None else wrap


def tool_result(
    block: _ToolUseLike,
    tools: AtMostOnce[Any] | Iterable[AtMostOnce[Any]] | Mapping[str, AtMostOnce[Any]],
    *,
    conversation: str | None = None,
    key: str | None = None,
) -> ToolResultBlockParam:
    """Run (or replay) a `tool_use` block with the tool of its name among `tools`; see
    `AtMostOnce.tool_result`."""
    if isinstance(tools, AtMostOnce):
        by_name: Mapping[str, AtMostOnce[Any]] = {tools.name: tools}
    elif isinstance(tools, Mapping):
        by_name = tools
    else:
        by_name = {t.name: t for t in tools}
    tool = by_name.get(block.name)
    if tool is None:
        raise KeyError(f"no at-most-once tool named {block.name!r} (have: {', '.join(sorted(by_name)) or 'none'})")
    return tool.tool_result(block, conversation=conversation, key=key)
