"""Server-sent events as they arrive: passed on as they come, cut into complete events, and read for a cassette."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator

from keel.emulator.cassette import Event

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_CONTENT = b"event: content_block_delta"
FLUSH_WITHIN = 0.0005  # seconds a chunk may wait for those read after it before it is sent


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


async def coalesced(chunks: AsyncIterator[bytes], within: float = FLUSH_WITHIN) -> AsyncGenerator[bytes, None]:
    """The chunks as they arrive, those that arrived together joined into one.

    A task reads the chunks; what it has read by the time the sender is ready again goes out in one piece, and no
    chunk waits more than `within` seconds for the pieces read after it (a large buffer of events takes the reader a
    while to go through). The first chunk goes out at once, and so does any that arrives alone: nothing waits for
    company; a burst (a fast upstream, or one the client lags behind) goes out in a few writes rather than one per
    event. An error while reading is raised here, after what came before it.
    """
    pending: list[bytes] = []
    ready = asyncio.Event()

    async def read() -> None:
        since = 0.0  # when the oldest pending chunk was read
        first = True
        async for chunk in chunks:
            now = time.perf_counter()
            if not pending:
                since = now
            pending.append(chunk)
            ready.set()
            if first or now - since >= within:
                first = False
                await asyncio.sleep(0)  # let the sender take what there is

    reader = asyncio.ensure_future(read())
    reader.add_done_callback(lambda _: ready.set())
    try:
        while True:
            await ready.wait()
            ready.clear()
            if pending:
                data = b"".join(pending)
                pending.clear()
                yield data
            if reader.done() and not pending:
                reader.result()  # the reader's error, if it had one
                return
    finally:
        reader.cancel()
        await asyncio.wait({reader})
