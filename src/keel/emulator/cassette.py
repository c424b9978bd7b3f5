"""Cassettes: recorded API exchanges, one JSON line each, that the emulator replays (`keel proxy --record` writes them).

A cassette is a JSONL file. Its first line is a header, `{"keel_cassette": 1, "keel_version": "…", "recorded_at": …,
"upstream": …}`; `keel_cassette` is the format, which a keel reads when it knows it (whatever keel version wrote the
file) and otherwise refuses, naming both versions. Every other line is one exchange:

    {"method": "POST", "path": "/v1/messages", "query": "", "request": {…canonical body…},
     "status": 200, "headers": {"content-type": …, "request-id": …, "anthropic-ratelimit-…": …},
     "head_ms": 412.5, "done_ms": 1318.0, "body": {…}}

with, for a stream, `"events": [{"t": 415.2, "event": "message_start", "data": {…}}, …]` in place of `body`: each
event with its offset in ms from the request. `request` is the JSON body with its keys sorted (null without one),
`body` the JSON answer (or its text, for JSONL results). Only the headers worth keeping are kept (`KEPT_HEADERS`).

Secrets never reach the file: the writer (`CassetteWriter`) scrubs each exchange before writing it. Credential
headers are never kept; any string anywhere matching an API key pattern (`KEY_PATTERN`, e.g. `sk-ant-…`), any value
of a field whose name says it is secret (`api_key`, `authorization`, `password`, `…secret…`), and every literal
secret the caller names (the client's own key) become `[scrubbed]`.

A cassette that cannot be read (not JSON, cut short, a field of the wrong type) is a `CassetteError` naming the file
and line, raised when it is loaded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from .. import _jsonl as jsonl
from .access_log import stamp

FORMAT = 1
SCRUBBED = "[scrubbed]"
KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}")
SECRET_FIELD = re.compile(r"^(x[-_])?api[-_]?key$|^authorization$|password|secret", re.IGNORECASE)
KEPT_HEADERS = ("content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry")
KEPT_PREFIX = "anthropic-ratelimit-"


class CassetteError(ValueError):
    """A cassette that cannot be used: unreadable, cut short, of another format, or with a bad field (with its
    file and line)."""


def keel_version() -> str:
    try:
        return metadata.version("claude-keel")
    except metadata.PackageNotFoundError:
        return "unknown"


def kept_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The response headers a cassette keeps, names lowercased."""
    kept = {}
    for name, value in headers:
        lower = name.lower()
        if lower in KEPT_HEADERS or lower.startswith(KEPT_PREFIX):
            kept[lower] = value
    return kept


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, SCRUBBED)
    return KEY_PATTERN.sub(SCRUBBED, text)


def scrub(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """`value` (any JSON value) with every secret replaced by `[scrubbed]`: strings (object keys included) matching
    `KEY_PATTERN` or containing one of `secrets`, and every value of a field whose name is a secret's
    (`SECRET_FIELD`)."""
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, dict):
        return {
            _scrub_text(key, secrets): SCRUBBED
            if SECRET_FIELD.search(key) and item is not None
            else scrub(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [scrub(item, secrets) for item in value]
    return value


def _secret_spans(text: str, secrets: tuple[str, ...]) -> list[tuple[int, int]]:
    """Where secrets are in `text`, as merged (start, end) spans in order."""
    spans = [match.span() for match in KEY_PATTERN.finditer(text)]
    for secret in secrets:
        start = text.find(secret) if secret else -1
        while start >= 0:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _without_spans(text: str, offset: int, spans: list[tuple[int, int]]) -> str:
    """One piece (at `offset` of the whole) without the parts the spans cover; `[scrubbed]` where a span starts."""
    out, cursor = [], 0
    for start, end in spans:
        low, high = max(start - offset, 0), min(end - offset, len(text))
        if low >= high:
            continue
        out.append(text[cursor:low])
        if start >= offset:
            out.append(SCRUBBED)
        cursor = high
    out.append(text[cursor:])
    return "".join(out)


def scrub_stream(events: list[Event], secrets: tuple[str, ...] = ()) -> list[Event]:
    """A stream's events with secrets scrubbed where deltas split them: the pieces of each block's text (or tool
    input, or thinking) are read together, and a secret spanning several is replaced by `[scrubbed]` in the first of
    them and removed from the others. (Each event is scrubbed on its own as well, by `scrub`.)"""
    pieces: dict[tuple[Any, str, str], list[int]] = {}  # (block index, delta type, field) -> event positions
    for position, event in enumerate(events):
        delta = event.data.get("delta") if isinstance(event.data, dict) else None
        if event.name == "content_block_delta" and isinstance(delta, dict):
            for field_name, value in delta.items():
                if field_name != "type" and isinstance(value, str):
                    pieces.setdefault((event.data.get("index"), str(delta.get("type")), field_name), []).append(
                        position
                    )
    scrubbed = list(events)
    for (_, _, field_name), positions in pieces.items():
        texts = [events[p].data["delta"][field_name] for p in positions]
        spans = _secret_spans("".join(texts), secrets)
        if not spans:
            continue
        offset = 0
        for position, text in zip(positions, texts, strict=True):
            kept = _without_spans(text, offset, spans)
            offset += len(text)
            if kept != text:
                event = events[position]
                data = {**event.data, "delta": {**event.data["delta"], field_name: kept}}
                scrubbed[position] = Event(event.at_ms, event.name, data, event.raw)
    return scrubbed


def canonical_body(value: Any) -> Any:
    """A JSON value with every object's keys sorted: how a cassette writes a request body."""
    if isinstance(value, dict):
        return {key: canonical_body(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical_body(item) for item in value]
    return value


@dataclass(frozen=True)
class Event:
    """One recorded SSE event: its offset from the request (ms), name and data (parsed JSON, or the raw text)."""

    at_ms: float
    name: str
    data: Any
    raw: bool = False  # `data` is the text as sent: it was not JSON

    def wire(self) -> bytes:
        data = self.data if self.raw else json.dumps(self.data, separators=(",", ":"))
        return f"event: {self.name}\ndata: {data}\n\n".encode()

    def to_json(self) -> dict[str, Any]:
        return {"t": self.at_ms, "event": self.name, "raw" if self.raw else "data": self.data}


@dataclass
class Exchange:
    """One request and the response it got, as a cassette keeps it."""

    method: str
    path: str
    query: str
    request: Any  # the JSON body, None without one
    status: int
    headers: dict[str, str]  # the kept ones (`kept_headers`)
    body: Any = None  # the JSON answer, or its text; None for a stream
    events: list[Event] | None = None  # a stream's events
    head_ms: float = 0.0  # from the request to the response head
    done_ms: float = 0.0  # from the request to the end of the body
    line: int = field(default=0, compare=False)  # where it was read from (0: not read from a file)

    @property
    def is_stream(self) -> bool:
        return self.events is not None

    def describe(self) -> str:
        """`POST /v1/messages` (with `?query`), and the line it is on."""
        query = f"?{self.query}" if self.query else ""
        where = f" (line {self.line})" if self.line else ""
        return f"{self.method} {self.path}{query}{where}"

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "request": self.request,
            "status": self.status,
            "headers": dict(sorted(self.headers.items())),
            "head_ms": round(self.head_ms, 1),
            "done_ms": round(self.done_ms, 1),
        }
        if self.events is not None:
            line["events"] = [event.to_json() for event in self.events]
        else:
            line["body"] = self.body
        return line


def header_line(upstream: str | None) -> dict[str, Any]:
    recorded_at = stamp(time.time())
    return {"keel_cassette": FORMAT, "keel_version": keel_version(), "recorded_at": recorded_at, "upstream": upstream}


@dataclass(frozen=True)
class Cassette:
    """A cassette read from `path`: its header and its exchanges, in recorded order."""

    path: Path
    header: dict[str, Any]
    exchanges: tuple[Exchange, ...]


def read_cassette(path: Path) -> Cassette:
    """Read and check a whole cassette; any problem is a `CassetteError` naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CassetteError(f"{path}: cannot read the cassette: {err.strerror or err}") from None
    lines = data.split(b"\n")
    cut_short = bool(data) and not data.endswith(b"\n")
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((number, jsonl.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as err:
            raise CassetteError(f"{path}:{number}: not UTF-8 text (byte {err.start + 1})") from None
        except json.JSONDecodeError as err:
            last = number == len(lines) and cut_short
            why = "the line is cut short (was the recording interrupted?)" if last else f"not valid JSON ({err})"
            raise CassetteError(f"{path}:{number}: {why}") from None
    if not records:
        raise CassetteError(f"{path}:1: empty file: a cassette starts with a keel_cassette header line")
    number, header = records[0]
    _check_header(path, number, header)
    exchanges = tuple(_exchange(record, f"{path}:{number}", number) for number, record in records[1:])
    return Cassette(path, header, exchanges)


def _check_header(path: Path, number: int, header: Any) -> None:
    version = header.get("keel_cassette") if isinstance(header, dict) else None
    if version is None:
        raise CassetteError(f"{path}:{number}: not a keel cassette: the first line has no keel_cassette header")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CassetteError(f"{path}:{number}: keel_cassette must be a format number >= 1, got {version!r}")
    if version > FORMAT:
        raise CassetteError(
            f"{path}: cassette format {version} (written by keel {header.get('keel_version', '?')}) is newer than "
            f"this keel {keel_version()} reads (format {FORMAT}): upgrade keel, or record the cassette again"
        )


def _field(record: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CassetteError(f"{where}: {name!r} must be {what}, got {value!r}")
    return value


def _exchange(record: Any, where: str, line: int) -> Exchange:
    if not isinstance(record, dict):
        raise CassetteError(f"{where}: an exchange must be a JSON object")
    status = _field(record, "status", int, where, "a whole number from 100 to 599")
    if not 100 <= status <= 599:
        raise CassetteError(f"{where}: 'status' must be a whole number from 100 to 599, got {status}")
    headers = _field(record, "headers", dict, where, "an object of strings")
    if not all(isinstance(value, str) for value in headers.values()):
        raise CassetteError(f"{where}: 'headers' must be an object of strings")
    raw_events = record.get("events")
    events = None
    if raw_events is not None:
        if not isinstance(raw_events, list):
            raise CassetteError(f"{where}: 'events' must be a list")
        events = [_event(raw, f"{where}: event {index}") for index, raw in enumerate(raw_events)]
    elif "body" not in record:
        raise CassetteError(f"{where}: an exchange needs a 'body' or 'events'")
    return Exchange(
        method=_field(record, "method", str, where, "a string"),
        path=_field(record, "path", str, where, "a string"),
        query=record.get("query") or "",
        request=record.get("request"),
        status=status,
        headers={name.lower(): value for name, value in headers.items()},
        body=record.get("body"),
        events=events,
        head_ms=float(record.get("head_ms") or 0),
        done_ms=float(record.get("done_ms") or 0),
        line=line,
    )


def _event(raw: Any, where: str) -> Event:
    if not isinstance(raw, dict):
        raise CassetteError(f"{where}: an event must be a JSON object")
    at = _field(raw, "t", (int, float), where, "a number of ms")
    name = _field(raw, "event", str, where, "a string")
    if "raw" in raw:
        return Event(float(at), name, _field(raw, "raw", str, where, "a string"), raw=True)
    if "data" not in raw:
        raise CassetteError(f"{where}: an event needs 'data' (or 'raw')")
    return Event(float(at), name, raw["data"])


class CassetteWriter:
    """Appends exchanges to a cassette, scrubbed, one line each, flushed as it goes (thread-safe).

    A new (or empty) file gets the header line first; an existing cassette must be of a format this keel reads, and
    is added to. `fresh=True` starts the file over.
    """

    def __init__(self, path: Path, *, upstream: str | None = None, fresh: bool = False) -> None:
        self.path = path
        if not fresh and path.exists() and path.stat().st_size > 0:
            read_cassette(path)  # refuse to add to a cassette that cannot be read back
            self._file: TextIO | None = path.open("a", encoding="utf-8")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")
            self._write_line(header_line(upstream))
        self._lock = threading.Lock()
        self.written = 0

    def _write_line(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def write(self, exchange: Exchange, secrets: tuple[str, ...] = ()) -> None:
        """Scrub `exchange` (the key pattern, secret fields, and every literal in `secrets`) and append it."""
        secrets = tuple(s for s in secrets if s)
        if exchange.events is not None:
            exchange = replace(exchange, events=scrub_stream(exchange.events, secrets))
        record = scrub(exchange.to_json(), secrets)
        with self._lock:
            if self._file is None:
                raise ValueError(f"the cassette {self.path} is closed")
            self._write_line(record)
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
