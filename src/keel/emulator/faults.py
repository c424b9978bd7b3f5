"""Fault injection: per request (header `x-keel-fault`) and per server (a TOML scenario file).

Header form: `x-keel-fault: status=529; times=2; retry_after_ms=20`. Scenario file form:

    seed = 7
    [[rules]]
    path = "/v1/messages"        # prefix of the request path, or a glob ("/v1/messages/batches/*/results")
    model = "claude-opus-5"      # only requests for this model (default: any)
    attempt = 0                  # only this attempt (the SDK's x-stainless-retry-count; default: any)
    probability = 0.3            # chance the rule fires when it matches (default 1)
    limit = 5                    # fire at most this many times in all (default: no limit)
    status = 529

The first rule that matches and fires applies. `times = N` makes a fault apply to attempts 0..N-1 only, so
the SDK's own retries can be watched succeeding on attempt N.

Message Batches: `errored_share` and `expired_share` (0..1) apply when a batch is created (`POST
/v1/messages/batches`): that share of its requests, chosen by seed, come back `errored` (with `error_type`,
default `api_error`) or `expired`. A rule with only shares is considered for batch creation alone.

The same file may set the rate limits, in a `[limits]` table (see `ratelimit.limits_from_toml` and
docs/emulator.md): `rpm`, `itpm`, `otpm`, `enforce`, `[[limits.keys]]` entries and a `[limits.ramp]`.
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from dataclasses import dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .errors import ApiError, invalid
from .ratelimit import LimitSpecError, RateLimits, limits_from_toml

FAULT_HEADER = "x-keel-fault"

_INT_FIELDS = {"status", "times", "stream_error_after", "drop_after", "retry_after_ms"}
_FLOAT_FIELDS = {"retry_after", "ttft_ms", "tps", "latency_ms"}
_SHARE_FIELDS = {"errored_share", "expired_share"}
_STR_FIELDS = {"error_type", "message", "error_code"}
_BOOL_FIELDS = {"should_retry", "connection_reset"}


class FaultSpecError(ValueError):
    """A fault header or scenario rule that cannot be understood; `field` names the culprit when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConnectionResetFault(Exception):
    """A `connection_reset` fault fired: the server resets the connection (`reset.reset_connection`), no answer."""


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    error_type: str | None = None
    message: str | None = None
    error_code: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    times: int | None = None
    ttft_ms: float | None = None
    tps: float | None = None
    latency_ms: float | None = None
    stream_error_after: int | None = None
    drop_after: int | None = None
    connection_reset: bool | None = None  # reset the connection (TCP RST) instead of answering
    errored_share: float | None = None  # Message Batches: share of a new batch's requests that come back errored
    expired_share: float | None = None  # ... and that never finish, so they expire at 24 h

    @property
    def batch_only(self) -> bool:
        """Only batch shares: such a fault means something at batch creation and nowhere else."""
        return (self.errored_share is not None or self.expired_share is not None) and all(
            getattr(self, f.name) is None
            for f in fields(self)
            if f.name not in _SHARE_FIELDS and f.name not in ("error_type", "message", "times")
        )

    def applies_to(self, attempt: int) -> bool:
        return self.times is None or attempt < self.times

    def describe(self) -> str:
        """A compact label for the access log, in the header's own syntax."""
        return "; ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) is not None)

    def error_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = f"{self.retry_after:g}"
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers

    def raise_before_answering(self) -> None:
        """Raise what this fault does instead of serving the request, if anything: `ConnectionResetFault` when it
        resets the connection, else its error response (`status_error`)."""
        if self.connection_reset:
            raise ConnectionResetFault(self.describe())
        error = self.status_error()
        if error is not None:
            raise error

    def status_error(self) -> ApiError | None:
        """The error response this fault answers with, in the API's shape; None when it sets no `status`. A plain
        429 gets `retry-after: 1` unless it says otherwise (a spend-limit 429, with `error_code`, gets none)."""
        if self.status is None:
            return None
        headers = self.error_headers()
        if self.status == 429 and self.error_code is None and not headers:
            headers["retry-after"] = "1"
        return ApiError(
            self.status, self.message, error_type=self.error_type, error_code=self.error_code, headers=headers
        )

    def stream_error_event(self) -> bytes:
        """The `event: error` frame of `stream_error_after` (`overloaded_error` unless `error_type` says otherwise)."""
        error = ApiError(529, self.message, error_type=self.error_type or "overloaded_error").error_object()
        return f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n".encode()


def _coerce(name: str, value: Any) -> Any:
    try:
        return _coerce_value(name, value)
    except FaultSpecError as err:
        raise FaultSpecError(str(err), field=name) from None


def _coerce_value(name: str, value: Any) -> Any:
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise FaultSpecError(f"{name}: expected a whole number, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise FaultSpecError(f"{name}: expected a whole number, got {value!r}") from None
        if number < 0 or (name == "status" and not 400 <= number <= 599):
            raise FaultSpecError(f"{name}: {number} is out of range")
        return number
    if name in _FLOAT_FIELDS:
        try:
            number_f = float(value)
        except (TypeError, ValueError):
            raise FaultSpecError(f"{name}: expected a number, got {value!r}") from None
        if number_f < 0 or (name == "tps" and number_f == 0):
            raise FaultSpecError(f"{name}: {value!r} is out of range")
        return number_f
    if name in _SHARE_FIELDS:
        try:
            share = float(value)
        except (TypeError, ValueError):
            raise FaultSpecError(f"{name}: expected a number from 0 to 1, got {value!r}") from None
        if not 0 <= share <= 1:
            raise FaultSpecError(f"{name}: expected a number from 0 to 1, got {value!r}")
        return share
    if name in _BOOL_FIELDS:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise FaultSpecError(f"{name}: expected true or false, got {value!r}")
    if name in _STR_FIELDS:
        return str(value)
    known = ", ".join(sorted(_INT_FIELDS | _FLOAT_FIELDS | _SHARE_FIELDS | _STR_FIELDS | _BOOL_FIELDS))
    raise FaultSpecError(f"unknown fault field '{name}' (known: {known})")


def make_fault(values: dict[str, Any]) -> Fault:
    fault = Fault(**{name: _coerce(name, value) for name, value in values.items()})
    if (
        fault.status is None
        and fault.stream_error_after is None
        and fault.drop_after is None
        and not fault.connection_reset
        and not (fault.ttft_ms or fault.tps or fault.latency_ms)
        and fault.errored_share is None
        and fault.expired_share is None
    ):
        raise FaultSpecError(
            "a fault needs status, stream_error_after, drop_after, connection_reset, a latency setting or a batch "
            "share (errored_share, expired_share)"
        )
    return fault


def parse_fault_header(value: str) -> Fault:
    pairs: dict[str, str] = {}
    for part in re.split(r"[;,]", value):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        if not sep:
            raise FaultSpecError(f"expected name=value, got {part.strip()!r}")
        pairs[name.strip().replace("-", "_")] = raw.strip()
    return make_fault(pairs)


@dataclass
class Rule:
    fault: Fault
    path: str = ""
    model: str | None = None
    attempt: int | None = None
    probability: float = 1.0
    limit: int | None = None  # fire at most this many times in all
    fired: int = 0

    def matches(self, path: str, model: str | None, attempt: int) -> bool:
        return (
            (fnmatchcase(path, self.path) if any(c in self.path for c in "*?[") else path.startswith(self.path))
            and (self.model is None or self.model == model)
            and (self.attempt is None or self.attempt == attempt)
            and self.fault.applies_to(attempt)
            and (self.limit is None or self.fired < self.limit)
        )


@dataclass
class Scenario:
    """Server-wide rules; `pick` draws from one seeded generator so a run is reproducible. A scenario file may also
    set the rate limits (`limits`)."""

    rules: list[Rule] = field(default_factory=list)
    seed: int = 0
    limits: RateLimits | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def choose(
        self, header: str | None, path: str, model: str | None, attempt: int, *, batch_create: bool = False
    ) -> Fault | None:
        """The fault for a request: the one its `x-keel-fault` header scripts (`header`), else the rules' pick. A
        header that cannot be understood is the API's 400 naming the header."""
        if header is None:
            return self.pick(path, model, attempt, batch_create=batch_create)
        try:
            scripted = parse_fault_header(header)
        except FaultSpecError as err:
            raise invalid(f"{FAULT_HEADER}: {err}") from None
        return scripted if scripted.applies_to(attempt) else None

    def pick(self, path: str, model: str | None, attempt: int, *, batch_create: bool = False) -> Fault | None:
        """The fault to apply, if any. Rules with only batch shares are considered for batch creation alone."""
        for rule in self.rules:
            if rule.fault.batch_only and not batch_create:
                continue
            if rule.matches(path, model, attempt) and (
                rule.probability >= 1.0 or self._rng.random() < rule.probability
            ):
                rule.fired += 1
                return rule.fault
        return None


def _rule(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise FaultSpecError("a rule must be a table")
    values = dict(raw)
    path = values.pop("path", "")
    model = values.pop("model", None)
    attempt = values.pop("attempt", None)
    probability = values.pop("probability", 1.0)
    limit = values.pop("limit", None)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise FaultSpecError(f"limit: expected a whole number >= 1, got {limit!r}", field="limit")
    if not isinstance(path, str) or (model is not None and not isinstance(model, str)):
        raise FaultSpecError("path and model must be strings")
    if attempt is not None and (not isinstance(attempt, int) or attempt < 0):
        raise FaultSpecError(f"attempt: expected a whole number >= 0, got {attempt!r}", field="attempt")
    if not isinstance(probability, int | float) or not 0 <= probability <= 1:
        raise FaultSpecError(f"probability: expected a number from 0 to 1, got {probability!r}", field="probability")
    return Rule(make_fault(values), path, model, attempt, float(probability), limit)


def _table_lines(lines: list[str], table: str) -> list[int]:
    """The lines that open a table, `[table]`, or an entry of an array of tables, `[[table]]`."""
    header = re.compile(rf"\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
    return [number for number, line in enumerate(lines, 1) if header.match(line)]


def _line_of(lines: list[str], starts: list[int], index: int, name: str | None) -> int | str:
    """The line of the offending key in the `index`-th of the tables opened at `starts` (or of the table's header
    when no key is to blame, or the key is not found there)."""
    if index >= len(starts):
        return "?"
    start = starts[index]
    end = next((n for n in range(start + 1, len(lines) + 1) if lines[n - 1].lstrip().startswith("[")), len(lines) + 1)
    if name is not None:
        for number in range(start + 1, end):
            if re.match(rf"\s*{re.escape(name)}\s*=", lines[number - 1]):
                return number
    return start


def _key_line(lines: list[str], name: str) -> int | str:
    """The line where a top-level key is set (`name = ...`) or its table opens (`[name]`, `[name.sub]`,
    `[[name]]`); "?" when it cannot be found (a quoted or dotted key)."""
    pattern = re.compile(rf"\s*(\[\[?\s*{re.escape(name)}\s*[\].]|{re.escape(name)}\s*[=.])")
    return next((number for number, line in enumerate(lines, 1) if pattern.match(line)), "?")


def load_scenario(path: Path, seed: int | None = None) -> Scenario:
    """Read a scenario file; a bad file raises `FaultSpecError` naming the file, line and reason."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        at = re.search(r"\(at line (\d+), column \d+\)", str(err))
        raise FaultSpecError(f"{path}:{at.group(1) if at else len(text.splitlines()) or 1}: {err}") from None
    lines = text.splitlines()
    unknown = sorted(set(data) - {"seed", "rules", "limits"})
    if unknown:
        line = _key_line(lines, unknown[0])
        raise FaultSpecError(f"{path}:{line}: unknown top-level key(s): {', '.join(unknown)}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise FaultSpecError(f"{path}:{_key_line(lines, 'rules')}: 'rules' must be an array of tables ([[rules]])")
    rules = []
    for index, raw in enumerate(raw_rules):
        try:
            rules.append(_rule(raw))
        except FaultSpecError as err:
            line = _line_of(lines, _table_lines(lines, "rules"), index, err.field)
            raise FaultSpecError(f"{path}:{line}: rule {index + 1}: {err}") from None
    limits = None
    if "limits" in data:
        try:
            limits = limits_from_toml(data["limits"])
        except LimitSpecError as err:
            starts = _table_lines(lines, err.table or "limits")
            line = _line_of(lines, starts, (err.entry or 1) - 1, err.name)
            raise FaultSpecError(f"{path}:{line}: {err}") from None
    file_seed = data.get("seed", 0)
    if not isinstance(file_seed, int):
        raise FaultSpecError(f"{path}:{_key_line(lines, 'seed')}: seed must be a whole number")
    return Scenario(rules=rules, seed=file_seed if seed is None else seed, limits=limits)
