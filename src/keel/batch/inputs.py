"""Reading a batch job's input: JSONL lines, validated locally before anything is sent.

Two line forms:
- batch form: `{"custom_id": "...", "params": {...Messages params...}}`
- short form: `{"prompt": "..."}` or `{"messages": [...]}` (optionally with `custom_id`, `model`,
  `max_tokens`, `system`), completed from the job's defaults (`--model`, `--max-tokens`, `--system`).

A bad line (bad JSON, bad or duplicate custom_id, missing field, over-size request) becomes a `Reject`
with its line number and reason; the rest proceeds. A missing custom_id is derived from the line's
content (the same file always gives the same ids), with `-2`, `-3`… for repeated content.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import _jsonl as jsonl

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REQUIRED_PARAMS = ("model", "max_tokens", "messages")
SHORT_FIELDS = {"custom_id", "prompt", "messages", "model", "max_tokens", "system"}


@dataclass(frozen=True)
class Defaults:
    """What an input line that does not say it gets.

    Attributes:
        model: the model id.
        max_tokens: the answer's token limit.
        system: the system prompt.
    """

    model: str | None = None
    max_tokens: int | None = None
    system: str | None = None


@dataclass(frozen=True)
class Item:
    """An accepted input line.

    Attributes:
        line: its 1-based line number in the input file.
        custom_id: the id its result is joined on.
        params_json: the canonical JSON of its Messages params.
    """

    line: int
    custom_id: str
    params_json: str

    @property
    def size(self) -> int:
        """Bytes this request adds to a batch body."""
        return len(self.params_json) + len(self.custom_id) + 32


@dataclass(frozen=True)
class Reject:
    """A rejected input line: it is reported, and the rest of the job goes on.

    Attributes:
        line: its 1-based line number in the input file.
        reason: what is wrong with it, naming the field.
        custom_id: its custom_id, when it had a readable one.
    """

    line: int
    reason: str
    custom_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "custom_id": self.custom_id, "reason": self.reason}


class _Invalid(ValueError):
    pass


def _params_of(data: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    if "params" in data:
        unknown = set(data) - {"custom_id", "params"}
        if unknown:
            raise _Invalid(f"unexpected field(s) beside params: {', '.join(sorted(unknown))}")
        given = data["params"]
        if not isinstance(given, dict):
            raise _Invalid("params must be an object")
        return dict(given)
    unknown = set(data) - SHORT_FIELDS
    if unknown:
        raise _Invalid(f"unknown field(s): {', '.join(sorted(unknown))} (expected prompt or messages, or params)")
    if "prompt" in data and "messages" in data:
        raise _Invalid("give prompt or messages, not both")
    if "prompt" in data:
        if not isinstance(data["prompt"], str) or not data["prompt"].strip():
            raise _Invalid("prompt must be a non-empty string")
        messages: Any = [{"role": "user", "content": data["prompt"]}]
    elif "messages" in data:
        messages = data["messages"]
    else:
        raise _Invalid("missing field: prompt, messages or params")
    params: dict[str, Any] = {
        "model": data.get("model", defaults.model),
        "max_tokens": data.get("max_tokens", defaults.max_tokens),
        "messages": messages,
    }
    system = data.get("system", defaults.system)
    if system is not None:
        params["system"] = system
    return params


def _check_params(params: dict[str, Any]) -> None:
    missing = [name for name in REQUIRED_PARAMS if params.get(name) is None]
    if missing:
        hint = " (give it on the line or as a default, e.g. --model)" if "model" in missing else ""
        raise _Invalid(f"missing field(s): {', '.join(missing)}{hint}")
    if not isinstance(params["model"], str):
        raise _Invalid("model must be a string")
    if isinstance(params["max_tokens"], bool) or not isinstance(params["max_tokens"], int) or params["max_tokens"] < 1:
        raise _Invalid("max_tokens must be a whole number >= 1")
    if not isinstance(params["messages"], list) or not params["messages"]:
        raise _Invalid("messages must be a non-empty list")
    if params.get("stream"):
        raise _Invalid("stream is not allowed in a batch request")


class IdSet(Protocol):
    """The custom_ids accepted so far: the consumer records each yielded item before asking for the next
    (the ledger does, so memory does not grow with the job)."""

    def __contains__(self, custom_id: object) -> bool: ...


def derived_id(params_json: str) -> str:
    return "req-" + hashlib.sha256(params_json.encode()).hexdigest()[:24]


def _json_object(line: bytes) -> dict[str, Any]:
    """One input line as a JSON object, or `_Invalid` saying why it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Invalid(f"not UTF-8 text (byte {err.start + 1})") from None
    try:
        data = jsonl.loads(text.rstrip("\r\n"))  # a line cut short errs at its end, not on "line 2"
    except json.JSONDecodeError as err:
        raise _Invalid(f"not valid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(data, dict):
        raise _Invalid("a line must be a JSON object")
    return data


def read_items(path: Path, defaults: Defaults, max_request_bytes: int, seen: IdSet) -> Iterator[Item | Reject]:
    """Each line of `path` as an accepted `Item` or a `Reject`, in order, reading one line at a time."""
    with path.open("rb") as file:  # lines end at "\n" alone, as for every JSONL reader (a lone "\r" is in a line)
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            custom_id: str | None = None
            try:
                data = _json_object(line)
                custom_id = data.get("custom_id")
                if custom_id is not None and (not isinstance(custom_id, str) or not CUSTOM_ID_RE.match(custom_id)):
                    raise _Invalid(f"custom_id {custom_id!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
                params = _params_of(data, defaults)
                _check_params(params)
                params_json = json.dumps(params, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
                if custom_id is None:
                    custom_id = derived_id(params_json)
                    suffix = 2
                    base = custom_id
                    while custom_id in seen:
                        custom_id, suffix = f"{base}-{suffix}", suffix + 1
                elif custom_id in seen:
                    raise _Invalid(f"duplicate custom_id {custom_id!r} (first used on an earlier line)")
                item = Item(number, custom_id, params_json)
                if item.size > max_request_bytes:
                    raise _Invalid(f"request is {item.size:,} bytes, over the {max_request_bytes:,}-byte limit")
            except _Invalid as err:
                yield Reject(number, str(err), custom_id if isinstance(custom_id, str) else None)
                continue
            yield item


def _screened(path: Path, defaults: Defaults, max_request_bytes: int) -> Iterator[Item | Reject]:
    """Each line of `path` accepted or rejected, as a run would (a custom_id given twice is rejected the second
    time), recording nothing."""
    seen: set[str] = set()
    for entry in read_items(path, defaults, max_request_bytes, seen):
        if isinstance(entry, Item):
            seen.add(entry.custom_id)
        yield entry


def accepted_items(path: Path, defaults: Defaults, max_request_bytes: int) -> Iterator[Item]:
    """The accepted lines of `path`, in order, recording nothing (a dry run's estimate)."""
    return (entry for entry in _screened(path, defaults, max_request_bytes) if isinstance(entry, Item))


def count_rejects(path: Path, defaults: Defaults, max_request_bytes: int) -> int:
    """How many lines of `path` a run would reject (shown before anything is sent)."""
    return sum(isinstance(entry, Reject) for entry in _screened(path, defaults, max_request_bytes))


def input_digest(path: Path, fingerprint: Mapping[str, Any]) -> str:
    """A digest of the input file and what else decides its requests (the defaults): the same digest is the same
    job, so running it again resumes it."""
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode())
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
