"""Message Batches: the batch store, its clock, how a batch progresses and how its results are served.

A batch's whole life is a pure function of the batch clock, so nothing runs in the background:

- At creation every request gets an outcome (its params are validated then, exactly as `/v1/messages` would,
  but a bad one only shows up as an `errored` result) and a place in a seeded finishing order. Requests
  finish one after another, evenly over the batch's simulated duration (`duration_for`), so
  `request_counts.processing` goes down as the clock moves; the batch ends when the last one finishes.
- Requests picked by an `expired_share` fault (or every request, with `stall`) never finish: they expire,
  and the batch ends, at `expires_at` (24 h after creation).
- A cancel stops further requests from finishing; `CANCEL_SECONDS` later the unfinished ones become
  `canceled` and the batch ends. Finished ones keep their results.
- Results are kept 29 days from `created_at`: then `archived_at` is set and the results are a 404.

The clock (a `Clock`) is the wall clock at start, running `speed` times faster (0 freezes it), plus
whatever `advance(seconds)` added, so tests move time explicitly and never sleep.

Results are generated when served, line by line, from compact per-request records (custom_id, an index
into the batch's distinct params, an outcome code), in chunks: a 100,000-request batch never holds its
whole JSONL in memory. A succeeded message is rendered once per distinct params and reused with a fresh
message id (messages with tool calls are rendered each time, so tool ids stay unique).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from .clock import Clock
from .errors import ApiError, invalid
from .faults import Fault
from .prompt_cache import InputUsage
from .render import message_json, new_id
from .responder import generate
from .validation import validate

BATCH_ID_PREFIX = "msgbatch_01"
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)
DAY = 24 * 3600.0
EXPIRES_AFTER = DAY  # unfinished requests expire 24 h after creation
RESULTS_KEPT = 29 * DAY  # results are kept 29 days from created_at
CANCEL_SECONDS = 5.0  # simulated time a cancellation takes to finish
SECONDS_PER_REQUEST = 0.03  # how a batch's duration grows with its size
CHUNK_BYTES = 64 * 1024  # results are sent in chunks of about this size
_RENDER_CACHE = 1024  # distinct params whose rendered message is kept while serving results
_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62 = bytes(_ALPHABET[byte % 62] for byte in range(256))  # random bytes -> base62 characters, in one call

# A request's outcome, fixed at creation.
OK, INVALID, FAULT_ERRORED, EXPIRES = 0, 1, 2, 3


def iso(timestamp: float) -> str:
    """RFC 3339 with microseconds and `Z`, as the API writes its batch times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration_for(size: int, base: float, rng: random.Random) -> float:
    """A batch's simulated processing time: `base` seconds for a small one, growing with its size, +-20%."""
    return (base + SECONDS_PER_REQUEST * size) * rng.uniform(0.8, 1.2)


@dataclass
class Batch:
    """One batch, stored compactly: per request a custom_id, an index into `params` and an outcome code."""

    id: str
    created_at: float
    duration: float
    version: str
    custom_ids: list[str]
    params_of: array[int]  # request -> index into `params`
    codes: bytearray  # request -> OK / INVALID / FAULT_ERRORED / EXPIRES
    order: array[int]  # finishing position -> request
    ok_before: array[int]  # position k -> how many of the first k to finish succeed
    errored_before: array[int]  # position k -> how many of the first k to finish are errored
    params: list[bytes]  # distinct params, as JSON
    params_errors: dict[int, str]  # distinct params index -> errored body (JSON) when they are invalid
    fault_error: str  # errored body (JSON) for requests an errored_share fault picked
    stall: bool
    cancel_at: float | None = None
    any_expires: bool = False

    @property
    def size(self) -> int:
        return len(self.custom_ids)

    @property
    def expires_at(self) -> float:
        return self.created_at + EXPIRES_AFTER

    @property
    def archived_at(self) -> float:
        return self.created_at + RESULTS_KEPT

    def end_at(self) -> float:
        if self.cancel_at is not None:
            return min(self.cancel_at + CANCEL_SECONDS, self.expires_at)
        if self.stall or self.any_expires:
            return self.expires_at
        return min(self.done_at, self.expires_at)

    @property
    def done_at(self) -> float:
        """When the last request to finish does (when nothing expires and no cancel comes first)."""
        return self.created_at + self.duration

    def ended(self, now: float) -> bool:
        return now >= self.end_at()

    def finished(self, now: float) -> int:
        """How many requests (in finishing order) have run by `now`, whatever their outcome."""
        if self.stall:
            return 0
        limit = min(now, self.expires_at, self.cancel_at if self.cancel_at is not None else math.inf)
        if limit >= self.done_at:
            return self.size
        return max(0, min(self.size, math.floor(self.size * (limit - self.created_at) / self.duration)))

    def counts(self, now: float) -> dict[str, int]:
        done = self.finished(now)
        succeeded, errored = self.ok_before[done], self.errored_before[done]
        rest = self.size - succeeded - errored
        ended = self.ended(now)
        return {
            "processing": 0 if ended else rest,
            "succeeded": succeeded,
            "errored": errored,
            "canceled": rest if ended and self.cancel_at is not None else 0,
            "expired": rest if ended and self.cancel_at is None else 0,
        }

    def status(self, now: float) -> str:
        if self.ended(now):
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"

    def to_json(self, now: float, base_url: str) -> dict[str, Any]:
        ended = self.ended(now)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(now),
            "request_counts": self.counts(now),
            "ended_at": iso(self.end_at()) if ended else None,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "archived_at": iso(self.archived_at) if now >= self.archived_at else None,
            "cancel_initiated_at": iso(self.cancel_at) if self.cancel_at is not None else None,
            "results_url": f"{base_url.rstrip('/')}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def _type_error(loc: str, expected: str) -> ApiError:
    return invalid(f"{loc}: Input should be a valid {expected}")


def _check_custom_id(value: Any, loc: str) -> str:
    """The schema's `custom_id` rules, in pydantic's words (the API validates with pydantic)."""
    if not isinstance(value, str):
        raise _type_error(loc, "string")
    if not value:
        raise invalid(f"{loc}: String should have at least 1 character")
    if len(value) > 64:
        raise invalid(f"{loc}: String should have at most 64 characters")
    if _CUSTOM_ID_RE.match(value) is None:
        raise invalid(f"{loc}: String should match pattern '{CUSTOM_ID_PATTERN}'")
    return value


def parse_create(raw: Any, max_requests: int) -> list[tuple[str, dict[str, Any]]]:
    """The envelope of a create request, checked as the API does at once; params are checked later, one by one."""
    if not isinstance(raw, dict):
        raise invalid("Input should be a valid dictionary")
    for key in raw:
        if key != "requests":
            raise invalid(f"{key}: Extra inputs are not permitted")
    if "requests" not in raw:
        raise invalid("requests: Field required")
    requests = raw["requests"]
    if not isinstance(requests, list):
        raise _type_error("requests", "list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise invalid(f"requests: List should have at most {max_requests} items after validation, not {len(requests)}")
    seen: dict[str, int] = {}
    parsed: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(requests):
        loc = f"requests.{index}"
        if not isinstance(item, dict):
            raise _type_error(loc, "dictionary")
        for key in item:
            if key not in ("custom_id", "params"):
                raise invalid(f"{loc}.{key}: Extra inputs are not permitted")
        for key in ("custom_id", "params"):
            if key not in item:
                raise invalid(f"{loc}.{key}: Field required")
        custom_id = _check_custom_id(item["custom_id"], f"{loc}.custom_id")
        if not isinstance(item["params"], dict):
            raise _type_error(f"{loc}.params", "dictionary")
        if custom_id in seen:
            raise invalid(
                f"{loc}.custom_id: duplicate custom_id '{custom_id}' (also used by requests.{seen[custom_id]}); "
                "each custom_id must be unique within a batch"
            )
        seen[custom_id] = index
        parsed.append((custom_id, item["params"]))
    return parsed


def _error_json(err: ApiError) -> str:
    return json.dumps(err.body(None), separators=(",", ":"))


def _fault_error(fault: Fault | None) -> str:
    error_type = (fault.error_type if fault else None) or "api_error"
    status = 529 if error_type == "overloaded_error" else 500
    return _error_json(ApiError(status, fault.message if fault else None, error_type=error_type))


class BatchStore:
    """Every batch the emulator knows, in creation order; thread-safe (loopback serves from another thread)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        speed: float = 1.0,
        duration: float = 60.0,
        stall: bool = False,
        max_requests: int = MAX_BATCH_REQUESTS,
    ) -> None:
        self.seed = seed
        self.clock = Clock(speed)
        self.duration = duration
        self.stall = stall
        self.max_requests = max_requests
        self._batches: dict[str, Batch] = {}
        self._serial = 0
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        """Move the batch clock forward by `seconds` simulated seconds."""
        self.clock.advance(seconds)

    def __len__(self) -> int:
        """How many batches were created (deleted ones included)."""
        return self._serial

    def now(self) -> float:
        return self.clock.now()

    # --- create ----------------------------------------------------------------------------------

    def create(self, raw: Any, version: str, fault: Fault | None = None) -> Batch:
        requests = parse_create(raw, self.max_requests)
        size = len(requests)
        with self._lock:
            serial = self._serial
            self._serial += 1
        rng = random.Random(f"keel-batch:{self.seed}:{serial}")
        custom_ids: list[str] = []
        params_of = array("I")
        codes = bytearray(size)
        index_of: dict[bytes, int] = {}
        params: list[bytes] = []
        params_errors: dict[int, str] = {}
        for request_index, (custom_id, body) in enumerate(requests):
            custom_ids.append(custom_id)
            key = to_json(body)
            distinct = index_of.get(key)
            if distinct is None:
                distinct = index_of[key] = len(params)
                params.append(key)
                try:
                    validate(body, version)
                except ApiError as err:
                    params_errors[distinct] = _error_json(err)
            params_of.append(distinct)
            if distinct in params_errors:
                codes[request_index] = INVALID
        expired = round(size * (fault.expired_share or 0.0)) if fault else 0
        errored = min(size - expired, round(size * (fault.errored_share or 0.0))) if fault else 0
        picked = rng.sample(range(size), expired + errored) if expired + errored else []
        for request_index in picked[:expired]:
            codes[request_index] = EXPIRES
        for request_index in picked[expired:]:
            if codes[request_index] == OK:
                codes[request_index] = FAULT_ERRORED
        positions = list(range(size))
        rng.shuffle(positions)
        order = array("I", positions)
        del positions
        ok_before, errored_before = array("I", [0]), array("I", [0])
        succeeded = failed = 0
        for request_index in order:
            code = codes[request_index]
            succeeded += code == OK
            failed += code in (INVALID, FAULT_ERRORED)
            ok_before.append(succeeded)
            errored_before.append(failed)
        batch = Batch(
            id=new_id(BATCH_ID_PREFIX),
            created_at=self.now(),
            duration=duration_for(size, self.duration, rng),
            version=version,
            custom_ids=custom_ids,
            params_of=params_of,
            codes=codes,
            order=order,
            ok_before=ok_before,
            errored_before=errored_before,
            params=params,
            params_errors=params_errors,
            fault_error=_fault_error(fault),
            stall=self.stall,
            any_expires=expired > 0,
        )
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    # --- read, list, cancel, delete --------------------------------------------------------------

    def get(self, batch_id: str) -> Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"message_batch_id: no Message Batch '{batch_id}'")
        return batch

    def page(self, query: Mapping[str, str]) -> tuple[list[Batch], bool]:
        """One page of batches, newest first, and whether there are more in the direction asked for."""
        limit_raw = query.get("limit", "20")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            raise invalid("limit: Input should be greater than or equal to 1 and less than or equal to 1000")
        limit = int(limit_raw)
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
        ids = [batch.id for batch in newest_first]

        def position(name: str) -> int:
            if query[name] not in ids:
                raise invalid(f"{name}: unknown Message Batch id '{query[name]}'")
            return ids.index(query[name])

        start, stop = 0, len(ids)
        if "after_id" in query:
            start = position("after_id") + 1
        if "before_id" in query:
            stop = position("before_id")
            if "after_id" not in query:
                start = max(0, stop - limit)
        page = newest_first[start:stop][:limit]
        has_more = start > 0 if "before_id" in query else start + len(page) < stop
        return page, has_more

    def cancel(self, batch_id: str) -> Batch:
        """Start a cancellation; an ended or already canceling batch is returned unchanged."""
        batch = self.get(batch_id)
        now = self.now()
        with self._lock:
            if batch.cancel_at is None and not batch.ended(now):
                batch.cancel_at = now
        return batch

    def delete(self, batch_id: str) -> dict[str, str]:
        batch = self.get(batch_id)
        now = self.now()
        if not batch.ended(now):
            raise invalid(
                f"Message Batch {batch_id} cannot be deleted while it is {batch.status(now)}: "
                "batches can only be deleted once they have ended (cancel it first)."
            )
        with self._lock:
            self._batches.pop(batch_id, None)
        return {"id": batch_id, "type": "message_batch_deleted"}

    # --- results ---------------------------------------------------------------------------------

    def results(self, batch_id: str) -> Iterator[bytes]:
        """The results JSONL in chunks, made as they are sent; raises `ApiError` before anything is sent."""
        batch = self.get(batch_id)
        now = self.now()
        if not batch.ended(now):
            raise invalid(
                f"Message Batch {batch_id} has not finished processing (processing_status: {batch.status(now)}); "
                "its results are available once it has ended."
            )
        if now >= batch.archived_at:
            raise ApiError(
                404,
                f"The results of Message Batch {batch_id} are no longer available: results are "
                "kept for 29 days after a batch is created.",
            )
        return _ResultWriter(batch, self.seed).chunks()


class _ResultWriter:
    """Writes one batch's result lines, rendering each distinct succeeded message once."""

    def __init__(self, batch: Batch, seed: int) -> None:
        self.batch = batch
        self.seed = seed
        self._rng = random.Random(f"keel-batch-results:{seed}:{batch.id}")
        self._messages: dict[int, tuple[str, str]] = {}  # distinct params -> message JSON before/after its id
        self.finished = batch.finished(batch.end_at())

    def _message_id(self) -> str:
        return "msg_01" + self._rng.randbytes(22).translate(_BASE62).decode()

    def _message(self, params: int) -> str:
        """The succeeded message for these params with a fresh id; rendered once per distinct params unless it
        carries tool ids (those must stay unique per response, so such messages are rendered each time)."""
        message_id = self._message_id()
        cached = self._messages.get(params)
        if cached is not None:
            return cached[0] + message_id + cached[1]
        valid = validate(json.loads(self.batch.params[params]), self.batch.version)
        gen = generate(valid, self.seed, new_id)
        message = message_json(message_id, valid, gen, InputUsage(valid.input_tokens))
        message["usage"]["service_tier"] = "batch"
        text = json.dumps(message, separators=(",", ":"))
        if not any(block.tool_id for block in gen.blocks):
            if len(self._messages) >= _RENDER_CACHE:
                self._messages.clear()
            prefix, _, suffix = text.partition(message_id)
            self._messages[params] = (prefix, suffix)
        return text

    def line(self, position: int) -> str:
        batch = self.batch
        request = batch.order[position]
        code = batch.codes[request]
        custom_id = batch.custom_ids[request]  # custom_ids need no JSON escaping: [a-zA-Z0-9_-] only
        if position >= self.finished or code == EXPIRES:
            kind = "canceled" if batch.cancel_at is not None else "expired"
            return f'{{"custom_id":"{custom_id}","result":{{"type":"{kind}"}}}}\n'
        if code == OK:
            message = self._message(batch.params_of[request])
            return f'{{"custom_id":"{custom_id}","result":{{"type":"succeeded","message":{message}}}}}\n'
        error = batch.params_errors[batch.params_of[request]] if code == INVALID else batch.fault_error
        return f'{{"custom_id":"{custom_id}","result":{{"type":"errored","error":{error}}}}}\n'

    def chunks(self) -> Iterator[bytes]:
        pending: list[str] = []
        size = 0
        for position in range(self.batch.size):
            text = self.line(position)
            pending.append(text)
            size += len(text)
            if size >= CHUNK_BYTES:
                yield "".join(pending).encode()
                pending, size = [], 0
        if pending:
            yield "".join(pending).encode()
