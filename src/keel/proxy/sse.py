"""Server-sent events as they arrive: complete events cut out of a byte stream, and read for a cassette."""

from __future__ import annotations

import json
import re

from keel.emulator.cassette import Event

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_CONTENT = b"event: content_block_delta"


class EventSplitter:
    """Feed it the body's chunks; it hands back each event (blank-line terminator included) once it is complete."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk if self._pending else chunk
        events = []
        start = 0
        for boundary in _BOUNDARY.finditer(data):
            events.append(data[start : boundary.end()])
            start = boundary.end()
        self._pending = data[start:]
        return events

    def rest(self) -> bytes:
        """What came after the last complete event (a stream cut mid-event)."""
        return self._pending


def is_content(event: bytes) -> bool:
    """An event carrying generated content (what a `tps` fault paces)."""
    return event.startswith(_CONTENT)


def parse_event(event: bytes, at_ms: float) -> Event | None:
    """The event as a cassette keeps it; None for a comment or a blank event."""
    name = "message"
    data: list[str] = []
    for line in event.decode("utf-8", "replace").splitlines():
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data:
        return None
    text = "\n".join(data)
    try:
        return Event(at_ms, name, json.loads(text))
    except json.JSONDecodeError:
        return Event(at_ms, name, text, raw=True)
