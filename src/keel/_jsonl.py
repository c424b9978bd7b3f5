"""One JSON line as keel's file readers parse it (inputs, records, cassettes)."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """`json.loads`, where every way a line can fail to be JSON is a `json.JSONDecodeError`: also nesting deeper than
    Python recurses, and an integer of more digits than Python converts (a RecursionError and a bare ValueError from
    `json.loads` itself), so a reader's one handler names the line instead of crashing on it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", str(text), 0) from None
    except ValueError as err:  # "Exceeds the limit (4300 digits) for integer string conversion; use ..."
        raise json.JSONDecodeError(str(err).split(";")[0], str(text), 0) from None
