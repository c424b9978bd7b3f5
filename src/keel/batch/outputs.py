"""The files a job writes: its results (one line per input line, in input order), rejects and failures.

Each is written to a temporary file and renamed, so a kill never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# `json.dumps(data, separators=…, ensure_ascii=False)` builds an encoder on every call; this one is built once. It
# writes what `json.dumps` does: parsed JSON cannot be circular, so the check for it is left out.
_LINES = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
UNSENT = "not sent: the run stopped before it (at its budget); run the same command again to carry on"


def write_results(rows: Iterable[dict[str, Any]], out: Path, rejects: Path | None, failures: Path | None) -> None:
    """The results file from a ledger's rows in input order (`items_in_order`), and the rejects and failures files
    when asked."""
    writers = {"out": _AtomicLines(out)}
    if rejects is not None:
        writers["rejects"] = _AtomicLines(rejects)
    if failures is not None:
        writers["failures"] = _AtomicLines(failures)
    try:
        for row in rows:
            line = _result_text(row)
            writers["out"].write_text(line)
            if row["state"] == "rejected" and "rejects" in writers:
                writers["rejects"].write({"line": row["line"], "custom_id": row["custom_id"], "reason": row["reason"]})
            if row["state"] not in ("succeeded", "rejected") and "failures" in writers:
                writers["failures"].write_text(line)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.commit()


def _dumps(data: Any) -> str:
    return _LINES.encode(data)


def _result_text(row: dict[str, Any]) -> str:
    """`_result_line(row)` as the results file writes it (compact JSON, no newline).

    A succeeded row's message is stored as compact JSON (`json.dumps`, ASCII): unless it holds a `\\u` escape,
    which `ensure_ascii=False` would write as the character itself, decoding and encoding it again gives back the
    very same text, so it is spliced in as it is (the bulk of the line, and of the time, for a large job).
    """
    message = row["message"]
    if row["state"] != "succeeded" or message is None or "\\u" in message:
        return _dumps(_result_line(row))
    request_id = f',"request_id":{_scalar(row["request_id"])}' if "request_id" in row else ""
    return (
        f'{{"line":{_scalar(row["line"])},"custom_id":{_scalar(row["custom_id"])},"status":"succeeded",'
        f'"stop_reason":{_scalar(row["stop_reason"])},"message":{message}{request_id},'
        f'"attempts":{_scalar(row["attempts"])}}}'
    )


def _scalar(value: Any) -> str:
    """`_dumps(value)`, quicker for the ints and None of a ledger row."""
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    return _dumps(value)


def _result_line(row: dict[str, Any]) -> dict[str, Any]:
    status = row["status"]
    line: dict[str, Any] = {"line": row["line"], "custom_id": row["custom_id"], "status": status}
    if status == "succeeded":
        line["stop_reason"] = row["stop_reason"]
        line["message"] = json.loads(row["message"])
    elif status == "rejected":
        line["error"] = {"type": "rejected", "message": row["reason"]}
    elif status == "unsent":
        line["error"] = {"type": "unsent", "message": UNSENT}
    elif row["error_type"] or row["error_message"]:
        line["error"] = {"type": row["error_type"] or row.get("result_type"), "message": row["error_message"]}
    if status != "rejected":
        if "request_id" in row:
            line["request_id"] = row["request_id"]
        line["attempts"] = row["attempts"]
    return line


class _AtomicLines:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # one per writer
        self.file = self.tmp.open("w", encoding="utf-8")

    def write(self, data: dict[str, Any]) -> None:
        self.write_text(_dumps(data))

    def write_text(self, line: str) -> None:
        self.file.write(line + "\n")

    def commit(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
