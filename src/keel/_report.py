"""`keel report`: summarise a JSONL records file, or find one call in it by request_id.

The file is read line by line and only bounded structures are kept, so memory stays flat however long the
file is: percentiles are exact up to `EXACT_SAMPLES` values, then come from a log-bucket histogram (within
0.5%); the timeline has at most `Timeline.MAX_BINS` bins (they widen as the file's time span grows); the
failures keep the latest `FAILURES_KEPT` per error class, and the bad lines the first `BAD_LINES_KEPT`.
A bad line (not JSON, not an object, not a keel record) is reported with its line number and skipped.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from rich.console import Console
from rich.table import Table

from . import _jsonl as jsonl
from ._error_map import by_name
from ._error_text import yes_no
from ._records import AttemptRecord, CallRecord
from ._usage import USAGE_FIELDS, Usage

__all__ = [
    "BAD_LINES_KEPT",
    "EXACT_SAMPLES",
    "FAILURES_KEPT",
    "BadLine",
    "CallTrace",
    "Failure",
    "Line",
    "ModelTotals",
    "Percentiles",
    "Summary",
    "TimeBin",
    "Timeline",
    "find_calls",
    "iter_records",
    "parse_since",
    "read_lines",
    "record_problem",
    "render_calls",
    "render_summary",
    "summarize",
]

EXACT_SAMPLES = 100_000
"""Up to this many values a percentile is exact; past it, a bounded histogram takes over."""

_HISTOGRAM_GROWTH = 1.01  # bucket i holds [1.01**i, 1.01**(i+1)): reporting its middle is within 0.5%
_SMALLEST = 1e-3  # ms; anything below lands in one "about zero" bucket
_ZERO_BUCKET = -(10**9)


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """A line of a JSONL file that holds a JSON object."""

    number: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that was skipped, and why; `str()` is `PATH:LINE: reason`."""

    path: str
    number: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.number}: {self.reason}"


OnBad = Callable[[BadLine], None]


def read_lines(path: str | Path, *, needles: Iterable[str] | None = None) -> Iterator[Line | BadLine]:
    """Each non-blank line of a JSONL file, as a JSON object or as a `BadLine` saying why it is not one.

    Never raises for a bad line (only for a file that cannot be opened or read). With `needles`, lines
    containing none of them are skipped unparsed (a fast pre-filter; such lines are not checked at all).
    """
    name = str(path)
    # as the needles appear inside JSON strings (ASCII, escaped: how json.dumps writes them)
    wanted = None if needles is None else tuple(json.dumps(needle)[1:-1].encode() for needle in needles)
    with Path(path).open("rb") as file:
        for number, raw in enumerate(file, 1):
            if wanted is not None and not any(needle in raw for needle in wanted):
                continue
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield BadLine(name, number, f"not UTF-8 text (byte {err.start + 1})")
                continue
            try:
                data = jsonl.loads(text)
            except json.JSONDecodeError as err:
                yield BadLine(name, number, f"not a JSON record: {err.msg} (character {err.pos + 1})")
                continue
            if not isinstance(data, dict):
                yield BadLine(name, number, f"not a JSON record: a JSON {type(data).__name__}, not an object")
                continue
            yield Line(number, data)


_TEXT, _COUNT, _NUMBER, _OBJECT = "a string", "a whole number >= 0", "a finite number", "an object"
_MISSING = object()

# (field, what it must be, may be null), derived from the record types: the report checks every field it may read.
_Spec = tuple[tuple[str, str, bool], ...]
_KINDS = {str: _TEXT, int: _COUNT, float: _NUMBER}


def _spec_of(record_type: type) -> _Spec:
    spec = []
    for name, hint in get_type_hints(record_type).items():
        args = [arg for arg in get_args(hint) if arg is not type(None)]
        base = args[0] if len(args) == 1 and get_origin(hint) is not Literal else hint
        # a Literal is text; a dataclass (usage) or a dict (content) is an object
        kind = _TEXT if get_origin(base) is Literal else _KINDS.get(get_origin(base) or base, _OBJECT)
        spec.append((name, kind, type(None) in get_args(hint)))
    return tuple(spec)


_FIELDS = {"attempt": _spec_of(AttemptRecord), "call": _spec_of(CallRecord)}
_USAGE_SPEC = _spec_of(Usage)


def _fields_problem(data: dict[str, Any], spec: _Spec, where: str) -> str | None:
    for name, expected, nullable in spec:
        value = data.get(name, _MISSING)
        if value is None:
            if nullable:
                continue
            return f"{where}: field {name!r} is null"
        kind = type(value)  # exact types: JSON gives no subclasses, and bool must not pass for int
        if expected is _TEXT:
            ok = kind is str
        elif expected is _COUNT:
            ok = kind is int and value >= 0
        elif expected is _NUMBER:
            ok = kind is int or (kind is float and math.isfinite(value))
        else:
            ok = kind is dict
        if not ok:
            if value is _MISSING:
                return f"{where}: missing field {name!r}"
            return f"{where}: field {name!r} is not {expected}: {json.dumps(value, default=str)[:40]}"
    return None


def record_problem(data: dict[str, Any]) -> str | None:
    """Why this JSON object is not a keel attempt or call record the report can use (None: it is one)."""
    kind = data.get("kind")
    spec = _FIELDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        return "no 'kind' field: not a keel record" if kind is None else f"unknown record kind {kind!r}"
    problem = _fields_problem(data, spec, f"{kind} record")
    if problem is None and kind == "call":
        problem = _fields_problem(data["usage"], _USAGE_SPEC, "call record usage")
    return problem


def iter_records(
    path: str | Path, on_bad: OnBad | None = None, *, needles: Iterable[str] | None = None
) -> Iterator[dict[str, Any]]:
    """The keel records of a JSONL file, one at a time; every other line goes to `on_bad` and is skipped."""
    for item in read_lines(path, needles=needles):
        if isinstance(item, BadLine):
            if on_bad is not None:
                on_bad(item)
            continue
        problem = record_problem(item.data)
        if problem is not None:
            if on_bad is not None:
                on_bad(BadLine(str(path), item.number, problem))
            continue
        yield item.data


def parse_since(text: str) -> float:
    """An ISO 8601 time (a time without an offset is UTC) as a Unix timestamp, like the records' `at`."""
    value = text.strip()
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-24T09:30:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- aggregating -----------------------------------------------------------------------------------


class Percentiles:
    """Nearest-rank percentiles of a stream of non-negative numbers, in bounded memory.

    Exact while at most `exact_limit` values have been added; beyond that, read from a histogram of
    log-spaced buckets 1% wide (at most a few thousand buckets), so within 0.5% of the exact value.
    """

    def __init__(self, exact_limit: int = EXACT_SAMPLES) -> None:
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self._limit = exact_limit
        self._exact: array[float] | None = array("d")
        self._sorted = True
        self._buckets: Counter[int] = Counter()

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def add(self, value: float) -> None:
        self.count += 1
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self._buckets[self._bucket(value)] += 1
        if self._exact is not None:
            if len(self._exact) < self._limit:
                self._exact.append(value)
                self._sorted = False
            else:
                self._exact = None

    @staticmethod
    def _bucket(value: float) -> int:
        if value < _SMALLEST:
            return _ZERO_BUCKET
        return math.floor(math.log(value) / math.log(_HISTOGRAM_GROWTH))

    @staticmethod
    def _middle(bucket: int) -> float:
        if bucket == _ZERO_BUCKET:
            return 0.0
        return float(_HISTOGRAM_GROWTH ** (bucket + 0.5))

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (q in (0, 1]); None when nothing was added."""
        if self.count == 0:
            return None
        rank = min(self.count, max(1, math.ceil(q * self.count - 1e-9)))
        if self._exact is not None:
            if not self._sorted:
                self._exact = array("d", sorted(self._exact))
                self._sorted = True
            return self._exact[rank - 1]
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(self.max, max(self.min, self._middle(bucket)))
        return self.max  # not reached: the buckets hold every value

    def histogram(self) -> list[tuple[float, float, int]]:
        """Every value's bucket, in order, as (low, high, count): 1% wide, the first from 0 if any value was ~0."""
        return [
            (0.0 if bucket == _ZERO_BUCKET else _HISTOGRAM_GROWTH**bucket, self._upper(bucket), count)
            for bucket, count in sorted(self._buckets.items())
        ]

    @staticmethod
    def _upper(bucket: int) -> float:
        return _SMALLEST if bucket == _ZERO_BUCKET else float(_HISTOGRAM_GROWTH ** (bucket + 1))

    def as_dict(self, *quantiles: float) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        for q in quantiles:
            out[f"p{round(q * 100):g}"] = self.quantile(q)
        if not self.exact:
            out["approximate"] = True
        return out


NO_MODEL = "(none)"
"""How a call record without a model (an SDK call that is not a message, e.g. a batch poll) is grouped."""


@dataclass
class ModelTotals:
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    priced: int = 0  # successful calls with a known cost
    unpriced: int = 0  # successful calls with tokens whose model had no known price (cost_usd None)

    def add(self, record: dict[str, Any]) -> None:
        self.calls += 1
        usage = record["usage"]
        self._add_usage(usage)
        failed = record["error_class"] is not None
        if failed:
            self.failed += 1
        else:
            self.succeeded += 1
        cost = record["cost_usd"]
        if cost is not None:
            self.cost += Decimal(repr(cost))  # prices give short decimals: their exact sum, not float drift
            self.priced += 1
        elif not failed and any(usage[name] for name in USAGE_FIELDS):
            self.unpriced += 1  # tokens but no price; a call without tokens (e.g. a batch poll) costs nothing

    def _add_usage(self, counts: dict[str, int]) -> None:
        usage = self.usage
        for name in USAGE_FIELDS:
            setattr(usage, name, getattr(usage, name) + counts[name])

    def merge(self, other: ModelTotals) -> None:
        for name in ModelTotals.__dataclass_fields__:
            if name != "usage":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self._add_usage(asdict(other.usage))

    @property
    def cost_usd(self) -> float | None:
        """The total known cost; None when every successful call was unpriced (unknown, not zero)."""
        if self.unpriced and not self.priced:
            return None
        return float(self.cost)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "succeeded": self.succeeded,
            "failed": self.failed,
            **asdict(self.usage),
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced,
        }


FAILURES_KEPT = 20
"""The latest failed calls kept per error class (their request ids are listed on the HTML page)."""
BAD_LINES_KEPT = 100
"""The first bad lines kept (with their line numbers and reasons); every bad line is counted."""
_MESSAGE_KEPT = 500  # characters of a failure's message kept: a message is the API's text, of any length


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed call, as the report lists it."""

    request_id: str | None
    call_id: str
    error_class: str
    error: str
    model: str
    mode: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": iso(self.at)}


@dataclass
class TimeBin:
    """What happened in one stretch of time: the calls that ended in it (their retries, and the failed ones by
    class), and the error responses by class (each attempt at its own time)."""

    calls: int = 0
    retries: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: TimeBin) -> None:
        self.calls += other.calls
        self.retries += other.retries
        self.failed.update(other.failed)
        self.errors.update(other.errors)


# Bin widths in ms, each a multiple of the one before, so that widening regroups whole bins (past the last: doubled)
_BIN_WIDTHS_MS = (
    *(100, 200, 1_000, 2_000, 10_000, 30_000, 60_000, 300_000, 900_000, 1_800_000),  # 0.1 s to 30 min
    *(3_600_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000, 604_800_000),  # 1 h to 7 days
)


class Timeline:
    """Counts over time in at most `MAX_BINS` bins, whatever the time span and the order the records come in.

    Bins are aligned on the Unix epoch: bin i covers [i * width, (i + 1) * width). When a record would make the
    span wider than `MAX_BINS` bins, the width steps up to the next of `_BIN_WIDTHS_MS` and the bins regroup.
    """

    MAX_BINS = 96

    def __init__(self) -> None:
        self.width_ms = _BIN_WIDTHS_MS[0]
        self.bins: dict[int, TimeBin] = {}
        self._low = self._high = 0

    def at(self, at: float) -> TimeBin:
        """The bin of this moment (Unix time), made if need be."""
        index = math.floor(at * 1000 / self.width_ms)
        found = self.bins.get(index)
        if found is not None:
            return found
        if self.bins:
            low, high = min(self._low, index), max(self._high, index)
            while high - low >= self.MAX_BINS:
                self._widen()
                index = math.floor(at * 1000 / self.width_ms)
                low, high = min(self._low, index), max(self._high, index)
            found = self.bins.get(index)
            if found is not None:
                return found
            self._low, self._high = low, high
        else:
            self._low = self._high = index
        found = self.bins[index] = TimeBin()
        return found

    def _widen(self) -> None:
        wider = next((width for width in _BIN_WIDTHS_MS if width > self.width_ms), self.width_ms * 2)
        factor = wider // self.width_ms
        bins: dict[int, TimeBin] = {}
        for index, counts in self.bins.items():
            merged = bins.get(index // factor)
            if merged is None:
                bins[index // factor] = counts
            else:
                merged.merge(counts)
        self.width_ms, self.bins = wider, bins
        self._low, self._high = min(bins), max(bins)

    def series(self) -> list[tuple[float, TimeBin]]:
        """Every bin from the first to the last, empty ones included, with its start (Unix time)."""
        if not self.bins:
            return []
        return [
            (index * self.width_ms / 1000, self.bins.get(index) or TimeBin())
            for index in range(self._low, self._high + 1)
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "bin_seconds": self.width_ms / 1000,
            "bins": [
                {"start": iso(start), "calls": counts.calls, "retries": counts.retries}
                | {"failed": ranked(counts.failed), "errors": ranked(counts.errors)}
                for start, counts in self.series()
            ],
        }


def ranked(counter: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


@dataclass
class Summary:
    """Everything `keel report` shows, aggregated one record at a time (`add`) in bounded memory."""

    path: str = ""
    since: float | None = None
    exact_limit: int = EXACT_SAMPLES
    bad_lines: int = 0
    first_bad_lines: list[BadLine] = field(default_factory=list)
    before_since: int = 0
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    by_mode: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_policy: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latest_failures: dict[str, deque[Failure]] = field(default_factory=dict)
    stop_reasons: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    attempt_records: int = 0
    attempts_by_status: Counter[str] = field(default_factory=Counter)
    attempts_in_calls: int = 0
    retries: int = 0
    retried_calls: int = 0
    latency: dict[str, Percentiles] = field(default_factory=dict)
    ttft: Percentiles = field(init=False)
    model_modes: dict[tuple[str, str], ModelTotals] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    first_at: float | None = None
    last_at: float | None = None

    def __post_init__(self) -> None:
        self.ttft = Percentiles(self.exact_limit)

    def add(self, record: dict[str, Any]) -> None:
        at = record["at"]
        if self.since is not None and at < self.since:
            self.before_since += 1
            return
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)
        if record["kind"] == "attempt":
            self.attempt_records += 1
            status = record["status"]
            self.attempts_by_status[str(status) if status is not None else "no response"] += 1
            if record["error_class"] is not None:
                self.timeline.at(at).errors[record["error_class"]] += 1
        else:
            self._add_call(record)

    def add_bad_line(self, line: BadLine) -> None:
        self.bad_lines += 1
        if len(self.first_bad_lines) < BAD_LINES_KEPT:
            self.first_bad_lines.append(line)

    def _add_call(self, record: dict[str, Any]) -> None:
        self.calls += 1
        mode = record["mode"]
        model = record["model"] or NO_MODEL
        self.by_mode[mode] += 1
        self.by_model[model] += 1
        self.by_policy[record["policy"]] += 1
        self.attempts_in_calls += record["attempts"]
        self.retries += record["retries"]
        if record["retries"]:
            self.retried_calls += 1
        moment = self.timeline.at(record["at"])
        moment.calls += 1
        moment.retries += record["retries"]
        totals = self.model_modes.get((model, mode))
        if totals is None:
            totals = self.model_modes[model, mode] = ModelTotals()
        totals.add(record)
        error_class = record["error_class"]
        if error_class is not None:
            self.failed += 1
            self.failures[error_class] += 1
            moment.failed[error_class] += 1
            self._keep_failure(record, error_class, model, mode)
            return
        self.succeeded += 1
        if record["stop_reason"] is not None:  # a successful call without one is not a message
            self.stop_reasons[record["stop_reason"]] += 1
        if record["outcome"] is not None:
            self.outcomes[record["outcome"]] += 1
        for group in ("all", mode):
            stats = self.latency.get(group)
            if stats is None:
                stats = self.latency[group] = Percentiles(self.exact_limit)
            stats.add(record["latency_ms"])
        if mode == "stream" and record["ttft_ms"] is not None:
            self.ttft.add(record["ttft_ms"])

    def _keep_failure(self, record: dict[str, Any], error_class: str, model: str, mode: str) -> None:
        kept = self.latest_failures.get(error_class)
        if kept is None:
            kept = self.latest_failures[error_class] = deque(maxlen=FAILURES_KEPT)
        message = record["error"] or ""
        if len(message) > _MESSAGE_KEPT:
            message = message[: _MESSAGE_KEPT - 1] + "…"
        kept.append(Failure(record["request_id"], record["call_id"], error_class, message, model, mode, record["at"]))

    @property
    def models(self) -> dict[str, ModelTotals]:
        """Tokens and cost by model (every mode together)."""
        models: dict[str, ModelTotals] = {}
        for (model, _), totals in self.model_modes.items():
            models.setdefault(model, ModelTotals()).merge(totals)
        return models

    @property
    def totals(self) -> ModelTotals:
        total = ModelTotals()
        for totals in self.model_modes.values():
            total.merge(totals)
        return total

    def as_dict(self) -> dict[str, Any]:
        totals = self.totals
        models = self.models
        latency = {name: self.latency[name].as_dict(0.5, 0.95, 0.99) for name in sorted(self.latency)}
        return {
            "file": self.path,
            "since": iso(self.since),
            "first_at": iso(self.first_at),
            "last_at": iso(self.last_at),
            "lines": {
                "bad": self.bad_lines,
                "first_bad": [{"line": bad.number, "reason": bad.reason} for bad in self.first_bad_lines],
                "before_since": self.before_since,
            },
            "calls": {
                "total": self.calls,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "by_mode": ranked(self.by_mode),
                "by_model": ranked(self.by_model),
                "by_policy": ranked(self.by_policy),
                "failures_by_error_class": ranked(self.failures),
                "stop_reasons": ranked(self.stop_reasons),
                "outcomes": ranked(self.outcomes),
            },
            "attempts": {
                "total": self.attempt_records,
                "in_call_records": self.attempts_in_calls,
                "retries": self.retries,
                "retried_calls": self.retried_calls,
                "by_status": ranked(self.attempts_by_status),
            },
            "latency_ms": latency,
            "ttft_ms": self.ttft.as_dict(0.5, 0.95, 0.99),
            "models": {name: models[name].as_dict() for name in sorted(models)},
            "by_model_and_mode": [
                {"model": model, "mode": mode, **self.model_modes[model, mode].as_dict()}
                for model, mode in sorted(self.model_modes)
            ],
            "total": totals.as_dict(),
            "timeline": self.timeline.as_dict(),
            "latest_failures": {
                name: [failure.as_dict() for failure in self.latest_failures[name]] for name in ranked(self.failures)
            },
        }


def summarize(
    path: str | Path, *, since: float | None = None, on_bad: OnBad | None = None, exact_limit: int = EXACT_SAMPLES
) -> Summary:
    """Read a records file once and aggregate it; bad lines go to `on_bad` (and are counted).

    `exact_limit`: up to this many values per latency group, percentiles are exact (then within 0.5%).
    """
    summary = Summary(path=str(path), since=since, exact_limit=exact_limit)

    def bad(line: BadLine) -> None:
        summary.add_bad_line(line)
        if on_bad is not None:
            on_bad(line)

    for record in iter_records(path, bad):
        summary.add(record)
    return summary


@dataclass
class CallTrace:
    """One call found by request_id: its call record (None if the file lacks it) and its attempt records."""

    call_id: str
    call: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "call": self.call, "attempts": self.attempts}


def find_calls(
    path: str | Path, request_id: str, *, since: float | None = None, on_bad: OnBad | None = None
) -> list[CallTrace]:
    """Every call in which `request_id` appears (on the call record or on any attempt), with all its records.

    Two passes, so memory holds only the calls found: the first finds their call_ids, the second their
    other records. Each pass parses only the lines that contain what it looks for (grep speed on big
    files), so a bad line is reported only if it mentions the request_id.
    """

    def wanted(record: dict[str, Any]) -> bool:
        return since is None or record["at"] >= since

    call_ids: dict[str, None] = {}
    for record in iter_records(path, on_bad, needles=[request_id]):
        if record["request_id"] == request_id and wanted(record):
            call_ids.setdefault(record["call_id"], None)
    if not call_ids:
        return []
    traces = {call_id: CallTrace(call_id) for call_id in call_ids}
    for record in iter_records(path, None, needles=call_ids):
        trace = traces.get(record["call_id"])
        if trace is None or not wanted(record):
            continue
        if record["kind"] == "call":
            trace.call = record
        else:
            trace.attempts.append(record)
    for trace in traces.values():
        trace.attempts.sort(key=lambda attempt: (attempt["attempt"], attempt["at"]))
    return list(traces.values())


# --- rendering -------------------------------------------------------------------------------------


def error_verdict(name: str) -> tuple[str, str]:
    """Whether keel retries a recorded error class ("yes"/"no") and what to do about it, from the error map; "—" for
    both when the map does not know the name (a record of another version)."""
    try:
        row = by_name(name)
    except KeyError:
        return "—", "—"
    return yes_no(row.retryable), row.action.value


def format_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _dollars(cost: float) -> str:
    """Cents for big sums; four significant digits for the tiny costs of single calls."""
    if cost >= 100 or cost == 0:
        return f"${cost:,.2f}"
    decimals = max(2, 3 - math.floor(math.log10(cost)))
    text = f"{cost:,.{decimals}f}".rstrip("0")
    return "$" + (text + "0" if len(text.partition(".")[2]) < 2 else text)


def format_cost(totals: ModelTotals) -> str:
    cost = totals.cost_usd
    if cost is None:
        return f"unknown ({totals.unpriced} unpriced)"
    text = _dollars(cost)
    return f"{text} + {totals.unpriced} unpriced" if totals.unpriced else text


def _counts(title: str, rows: Iterable[tuple[str, str, int]], first: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(first)
    table.add_column("value")
    table.add_column("calls", justify="right")
    previous = None
    for group, value, count in rows:
        if previous is not None and group != previous:
            table.add_section()
        previous = group
        table.add_row(group, value, f"{count:,}")
    return table


def render_summary(summary: Summary, console: Console) -> None:
    """`keel report` as tables."""
    span = ""
    if summary.first_at is not None:
        span = f", {iso(summary.first_at)} to {iso(summary.last_at)}"
    console.print(f"[bold]{summary.path}[/bold]{span}")
    if summary.since is not None:
        console.print(f"since {iso(summary.since)} ({summary.before_since:,} earlier record(s) left out)")
    if summary.bad_lines:
        console.print(f"[yellow]{summary.bad_lines:,} bad line(s) skipped (listed on stderr)[/yellow]")
    if summary.calls == 0 and summary.attempt_records == 0:
        console.print("No records.")
        return
    console.print(
        f"{summary.calls:,} call(s): {summary.succeeded:,} succeeded, {summary.failed:,} failed; "
        f"{summary.attempt_records:,} attempt(s), {summary.retries:,} retries "
        f"({summary.retried_calls:,} call(s) retried)"
    )
    groups = [
        *(("mode", name, n) for name, n in ranked(summary.by_mode).items()),
        *(("model", name, n) for name, n in ranked(summary.by_model).items()),
        *(("policy", name, n) for name, n in ranked(summary.by_policy).items()),
        *(("stop_reason", name, n) for name, n in ranked(summary.stop_reasons).items()),
        *(("outcome", name, n) for name, n in ranked(summary.outcomes).items()),
    ]
    console.print(_counts("Calls", groups, "by"))
    if summary.failures:
        failures = Table(title="Failures by error class", title_justify="left")
        for column in ("error_class", "calls", "retryable", "action"):
            failures.add_column(column, justify="right" if column == "calls" else "left")
        for name, count in ranked(summary.failures).items():
            failures.add_row(name, f"{count:,}", *error_verdict(name))
        console.print(failures)
    console.print(_attempts_table(summary))
    timing = Table(title="Latency of successful calls (ms)", title_justify="left")
    for column in ("", "count", "p50", "p95", "p99"):
        timing.add_column(column, justify="left" if not column else "right")
    for name in sorted(summary.latency):
        stats = summary.latency[name]
        timing.add_row(
            name,
            f"{stats.count:,}",
            format_ms(stats.quantile(0.5)),
            format_ms(stats.quantile(0.95)),
            format_ms(stats.quantile(0.99)),
        )
    if summary.ttft.count:
        ttft = summary.ttft
        timing.add_row(
            "stream TTFT",
            f"{ttft.count:,}",
            format_ms(ttft.quantile(0.5)),
            format_ms(ttft.quantile(0.95)),
            format_ms(ttft.quantile(0.99)),
        )
    console.print(timing)
    console.print(_models_table(summary))


def _attempts_table(summary: Summary) -> Table:
    table = Table(title="Attempts", title_justify="left")
    table.add_column("HTTP status")
    table.add_column("attempts", justify="right")
    for status, count in ranked(summary.attempts_by_status).items():
        table.add_row(status, f"{count:,}")
    if summary.attempts_in_calls != summary.attempt_records:
        table.caption = f"the call records count {summary.attempts_in_calls:,} attempts"
    return table


def _models_table(summary: Summary) -> Table:
    table = Table(title="Tokens and cost by model", title_justify="left")
    table.add_column("model")
    for column in ("calls", "input", "output", "cache write", "cache read", "cost"):
        table.add_column(column, justify="right")

    def row(name: str, totals: ModelTotals, style: str | None = None) -> None:
        table.add_row(
            name,
            f"{totals.calls:,}",
            f"{totals.usage.input_tokens:,}",
            f"{totals.usage.output_tokens:,}",
            f"{totals.usage.cache_write_tokens:,}",
            f"{totals.usage.cache_read_tokens:,}",
            format_cost(totals),
            style=style,
        )

    models = summary.models  # merged from the model × mode totals on each read
    for name in sorted(models):
        row(name, models[name])
    if len(models) > 1:
        row("total", summary.totals, "bold")
    return table


_CALL_FIELDS_SHOWN = tuple(name for name, _, _ in _FIELDS["call"] if name not in ("call_id", "content", "kind"))


def render_calls(traces: list[CallTrace], request_id: str, console: Console) -> None:
    """The calls `find_calls` returned: each call record's fields, then its attempts in order."""
    for trace in traces:
        call = trace.call
        table = Table(title=f"Call {trace.call_id}", title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        if call is None:
            table.add_row("call record", "missing (the call may not have finished)")
        else:
            for name in _CALL_FIELDS_SHOWN:
                value = call.get(name)
                if name == "at":
                    value = iso(value)
                elif name in ("latency_ms", "ttft_ms") and value is not None:
                    value = format_ms(value)
                elif name == "cost_usd":
                    value = "unknown (no price)" if value is None and call["error_class"] is None else value
                    value = _dollars(value) if isinstance(value, float | int) else value
                elif name == "usage" and isinstance(value, dict):
                    value = ", ".join(f"{key}={count}" for key, count in value.items())
                table.add_row(name, "—" if value is None else str(value))
        console.print(table)
        attempts = Table(title="Attempts", title_justify="left")
        for column in ("#", "retry", "status", "error_class", "request_id", "ms", "at"):
            attempts.add_column(column, justify="right" if column in ("#", "retry", "ms") else "left")
        for attempt in trace.attempts:
            mark = " ◀" if attempt["request_id"] == request_id else ""
            attempts.add_row(
                str(attempt["attempt"]),
                str(attempt.get("retry_count", "—")),
                "—" if attempt["status"] is None else str(attempt["status"]),
                attempt["error_class"] or "",
                f"{attempt['request_id'] or '—'}{mark}",
                format_ms(attempt["latency_ms"]),
                iso(attempt["at"]) or "",
            )
        console.print(attempts)
