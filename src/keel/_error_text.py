"""The error map's rows in words, as `keel explain` and `keel cards` show them to a person."""

from __future__ import annotations

from ._error_map import ErrorClass

_UNLISTED = {"unknown_4xx": "an unlisted 4xx status", "unknown_5xx": "an unlisted 5xx status (or above)"}


def matches(row: ErrorClass) -> str:
    """What a row matches, e.g. `429 rate_limit_error error_code=enforced_spend_limit_reached`."""
    parts = [str(row.status) if row.status is not None else _UNLISTED.get(row.name, "no HTTP status")]
    if row.error_type:
        parts.append(row.error_type)
    if row.error_code:
        parts.append(f"error_code={row.error_code}")
    if row.message_contains:
        parts.append(f"message contains {row.message_contains!r}")
    return " ".join(parts)


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
