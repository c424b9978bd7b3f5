"""Attempt and call records: request_id and usage on every response, findable among millions.

One `AttemptRecord` per HTTP attempt (each retry and each error included), one `CallRecord` per call.
Both go to the stdlib logger `keel` (format them with `JsonFormatter`) and, optionally, to a JSONL file
that `keel report` reads. Records never hold the API key or request headers; message content only when
the caller opts in.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

from pydantic_core import to_json

from ._modes import Mode
from ._usage import USAGE_FIELDS, Usage

logger = logging.getLogger("keel")
logger.addHandler(logging.NullHandler())  # a library: records reach handlers the application configures, no others


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__, on every call
class AttemptRecord:
    """One HTTP attempt: each retry and each error included.

    Attributes:
        call_id: the call it belongs to (`CallRecord.call_id`).
        attempt: 1-based across the whole call, every round of retries included.
        retry_count: the SDK's `x-stainless-retry-count` for this attempt (0 for a round's first).
        endpoint: the request path, e.g. "/v1/messages".
        request_id: the response's `request-id`; None when no response arrived.
        status: the HTTP status; None when no response arrived (connection error, timeout).
        error_type: the error body's `error.type`, None on success.
        error_code: the error body's `error.details.error_code`, when there is one.
        error_class: keel's classification name of the error (e.g. "overloaded"), None on success.
        latency_ms: until the response head arrived (streams: not the whole body).
        at: when it ended (Unix time).
        kind: "attempt".
    """

    call_id: str
    attempt: int
    retry_count: int
    endpoint: str
    request_id: str | None
    status: int | None
    error_type: str | None
    error_code: str | None
    error_class: str | None
    latency_ms: float
    at: float = field(default_factory=time.time)
    kind: Literal["attempt"] = "attempt"

    def summary(self) -> str:
        outcome = self.status if self.status is not None else self.error_class
        return f"attempt {self.attempt} {self.endpoint} -> {outcome} request_id={self.request_id}"


@dataclass(slots=True)
class CallRecord:
    """One call: what `keel report` and a search by request_id read.

    Attributes:
        call_id: unique across processes; its attempts carry the same id.
        mode: "standard", "stream" or "batch".
        policy: the retry policy's name.
        model: the model id ("" for a call that is not a message, e.g. a batch poll).
        request_id: of the response that ended the call (or of the final error).
        stop_reason: the API's stop_reason, None without a message.
        outcome: keel's outcome kind (e.g. "refusal", "abandoned"), or the name of a non-message call.
        usage: the tokens of every round of the call.
        cost_usd: the usage at the model's prices; None when the model has no known price or no usage.
        latency_ms: from the call's start to its end.
        ttft_ms: streams: until the first content delta.
        attempts: HTTP attempts made.
        retries: attempts beyond one per round.
        rounds: requests made for this call: 1, or more with continuations and resumed streams.
        error_class: keel's classification of the final error, None on success.
        error: the final error's message, None on success.
        content: the request's system and messages and the response's content; only with log_content=True.
        at: when it ended (Unix time).
        kind: "call".
    """

    call_id: str
    mode: Mode
    policy: str
    model: str
    request_id: str | None
    stop_reason: str | None
    outcome: str | None
    usage: Usage
    cost_usd: float | None
    latency_ms: float
    ttft_ms: float | None
    attempts: int
    retries: int
    rounds: int
    error_class: str | None
    error: str | None
    content: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)
    kind: Literal["call"] = "call"

    def summary(self) -> str:
        if self.error_class:
            return f"call {self.call_id} {self.model} failed: {self.error_class} request_id={self.request_id}"
        return (
            f"call {self.call_id} {self.mode} {self.model} {self.stop_reason} request_id={self.request_id} "
            f"in={self.usage.input_tokens} out={self.usage.output_tokens} cost={self.cost_usd}"
        )


Record = AttemptRecord | CallRecord


class DeferredCallRecord:
    """A successful call's record, built when first needed and then kept: when the caller reads
    `reply.record`, when a handler of the `keel` logger wants it, or when the records file is written.

    Building a record prices the usage; done with the records file's other gathered records, in one batch,
    it costs a fraction of what it costs on each call's own path (cold code and data between two API calls).
    Whoever builds it first, every later reader gets the same `CallRecord` (two threads building it at the
    same moment build equal ones: every input was fixed when the call ended).
    """

    __slots__ = ("_build", "_record")
    kind: Literal["call"] = "call"
    error_class: None = None  # only successful calls are deferred
    content: None = None  # nor calls that record content: that is the caller's data, serialised at once

    def __init__(self, build: Callable[[], CallRecord]) -> None:
        self._build: Callable[[], CallRecord] | None = build
        self._record: CallRecord | None = None

    def get(self) -> CallRecord:
        if self._record is None:
            build = self._build  # None: another thread has just built the record (it is set before this is dropped)
            record = build() if build is not None else None
            if self._record is None and record is not None:
                self._record, self._build = record, None  # what it was built from need not live as long as the reply
        assert self._record is not None
        return self._record


Emitted = Record | DeferredCallRecord


_ATTEMPT_FIELDS = tuple(f.name for f in fields(AttemptRecord))
_CALL_FIELDS = tuple(f.name for f in fields(CallRecord))
_attempt_values = attrgetter(*_ATTEMPT_FIELDS)
_call_values = attrgetter(*_CALL_FIELDS)
_usage_values = attrgetter(*USAGE_FIELDS)


def record_dict(record: Record) -> dict[str, Any]:
    """The record as `dataclasses.asdict` gives it (same keys, order and values), built directly.

    Every field is an immutable scalar except `CallRecord.usage` (a dataclass of ints) and
    `CallRecord.content` (caller data, only with log_content=True): a record with content still goes
    through `asdict`, which deep-copies it.
    """
    if type(record) is AttemptRecord:
        return dict(zip(_ATTEMPT_FIELDS, _attempt_values(record), strict=True))
    if type(record) is CallRecord and record.content is None and type(record.usage) is Usage:
        data = dict(zip(_CALL_FIELDS, _call_values(record), strict=True))
        data["usage"] = dict(zip(USAGE_FIELDS, _usage_values(record.usage), strict=True))
        return data
    return asdict(record)


_ID_FIELDS = ("trace_id", "span_id")


def span_ids() -> dict[str, str]:
    """`trace_id` and `span_id` (hex, as OpenTelemetry writes them) of the active OpenTelemetry span, for a log
    record; empty without one. OpenTelemetry is imported here, when a record is logged: never by `import keel`."""
    try:
        from opentelemetry import trace
    except ImportError:  # the SDK needs opentelemetry-api, but a Recorder can be used without the SDK
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; keel's records put their fields at the top level, with the `trace_id` and
    `span_id` of the span active when they were logged."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "keel", None)
        if isinstance(fields, dict):
            data.update(fields)
            for name in _ID_FIELDS:
                if (value := getattr(record, name, None)) is not None:
                    data[name] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class JsonlSink:
    """Appends JSON lines. Opened at construction, so a bad path fails there, not mid-traffic.

    Records of successful calls are gathered for at most `flush_seconds` (or `flush_records`) and then
    serialised and written together; anything about an error is written at once, with whatever was
    waiting. A gathered run is written by the next write that finds it due or, when no call comes, by a
    small daemon thread, so a quiet process does not keep records in memory either. Serialising a run in
    one go keeps JSON work off each call's own path (records are plain values, never changed once
    emitted); a record carrying message content refers to the caller's data, which may change after the
    call, so it is serialised the moment it arrives. Each write is one `os.write` of whole lines on a file
    opened with O_APPEND, so several processes can share the file without torn or interleaved lines.
    `close()` (and interpreter exit) writes what is left. A forked child starts with nothing gathered: what
    was waiting is the parent's to write.
    """

    def __init__(self, path: str | Path, *, flush_seconds: float = 0.2, flush_records: int = 1000) -> None:
        self.path = Path(path)
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise ValueError(f"keel: cannot write the records file {self.path}: {err.strerror or err}") from None
        self._pending: list[Emitted | bytes] = []  # bytes: a line already serialised (a record with content)
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        atexit.register(self.close)
        this = weakref.ref(self)  # the fork hook cannot be removed: it must not keep the sink alive
        os.register_at_fork(after_in_child=lambda: None if (sink := this()) is None else sink._after_fork())

    def write(self, records: Sequence[Emitted], *, urgent: bool = True) -> None:
        with self._lock:
            if self._fd is None:
                raise ValueError(f"keel: the records file {self.path} is closed")
            pending = self._pending
            if not pending:
                self._since = time.monotonic()
            if records[-1].kind == "call" and records[-1].content is not None:  # only a call record has content
                pending.extend(records[:-1])
                pending.append(to_json(records[-1], fallback=str))
            else:
                pending.extend(records)
            if urgent or len(pending) >= self.flush_records or time.monotonic() - self._since >= self.flush_seconds:
                self._flush()
            elif self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_when_quiet, name="keel-records", daemon=True)
                self._flusher.start()

    def _flush_when_quiet(self) -> None:
        """The daemon thread: writes a gathered run that no later write has found due."""
        while not self._closed.wait(self.flush_seconds):
            with self._lock:
                if self._fd is None:
                    return
                if self._pending and time.monotonic() - self._since >= self.flush_seconds:
                    try:
                        self._flush()
                    except OSError as err:  # a full disk: said, and the thread goes on for the next run
                        logger.warning("keel: records are not being written to %s: %s", self.path, err)

    def _after_fork(self) -> None:
        # the parent's lock and event may have been held by one of its threads at the fork; its thread is gone
        self._lock = threading.Lock()
        if not self._closed.is_set():
            self._closed = threading.Event()
        self._pending = []
        self._flusher = None

    def flush(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._flush()

    def _flush(self) -> None:
        lines = []
        for item in self._pending:
            try:  # pydantic_core serialises the slotted dataclasses directly: the same JSON as `record_dict` gives
                record = item.get() if type(item) is DeferredCallRecord else item
                lines.append(record if type(record) is bytes else to_json(record, fallback=str))
            except Exception as err:  # a record that cannot be built or encoded is reported; the others are written
                logger.warning("keel: a record for %s could not be written: %r", self.path, err)
        lines.append(b"")
        data = b"\n".join(lines)
        self._pending.clear()
        assert self._fd is not None
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._fd is not None:
                try:
                    self._flush()
                finally:
                    os.close(self._fd)
                    self._fd = None
                    atexit.unregister(self.close)


class Recorder:
    """Where a client's records go: the `keel` logger always, and a JSONL file when given.

    A record that cannot be written (disk full, file closed) is reported once on the `keel` logger and
    dropped: the call it describes has happened, and is not failed after the fact.
    """

    def __init__(self, jsonl: str | Path | JsonlSink | None = None) -> None:
        self.sink = JsonlSink(jsonl) if isinstance(jsonl, str | Path) else jsonl
        self._write_failed = False

    def emit(self, *records: Emitted) -> None:
        """Write these records together (one write), and log each: failures at WARNING, the rest at INFO.

        Errors are emitted the moment they happen, so in a group only the last record can be one: that is
        what decides whether the group is written at once.
        """
        failed = records[-1].error_class is not None
        if self.sink is not None:
            try:
                self.sink.write(records, urgent=failed)
            except (OSError, ValueError) as err:
                if not self._write_failed:
                    self._write_failed = True
                    logger.warning("keel: records are not being written to %s: %s", self.sink.path, err)
        if logger.isEnabledFor(logging.INFO):
            ids = span_ids()
            for item in records:
                record = item.get() if isinstance(item, DeferredCallRecord) else item
                level = logging.WARNING if record.kind == "call" and record.error_class is not None else logging.INFO
                logger.log(level, record.summary(), extra={"keel": record_dict(record), **ids})
        elif failed and (last := records[-1]).kind == "call" and logger.isEnabledFor(logging.WARNING):
            assert type(last) is CallRecord  # a failure is never deferred
            logger.warning(last.summary(), extra={"keel": record_dict(last), **span_ids()})

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


class CapturedRecords(Recorder):
    """A `Recorder` that also keeps every record in memory, in the order they were emitted (and logs them, and writes
    them to `jsonl` when given, as any recorder does). What `keel.testing`'s `keel_records` gives a test, and what the
    tour shows.

    Attributes:
        records: every attempt and call record so far.
        calls: the call records.
        attempts: the attempt records.
    """

    def __init__(self, jsonl: str | Path | None = None) -> None:
        super().__init__(jsonl)
        self._kept: list[Emitted] = []

    def emit(self, *records: Emitted) -> None:
        super().emit(*records)
        self._kept.extend(records)

    def clear(self) -> None:
        """Forget the records kept so far (those written to the file stay there)."""
        self._kept.clear()

    @property
    def records(self) -> list[AttemptRecord | CallRecord]:
        return [item.get() if isinstance(item, DeferredCallRecord) else item for item in self._kept]

    @property
    def calls(self) -> list[CallRecord]:
        return [record for record in self.records if isinstance(record, CallRecord)]

    @property
    def attempts(self) -> list[AttemptRecord]:
        return [record for record in self.records if isinstance(record, AttemptRecord)]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file; a bad line raises ValueError with its line number.

    `keel report` reads the same way but skips bad lines instead (`keel._report.read_lines`).
    """
    from ._report import BadLine, read_lines

    records = []
    for item in read_lines(path):
        if isinstance(item, BadLine):
            raise ValueError(str(item))
        records.append(item.data)
    return records
