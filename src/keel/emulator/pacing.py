"""A stream's pace and its stream faults, shared by the emulator's own streams, its replays and keel's proxy.

`paced` takes SSE events as they come (each with whether it carries generated content) and sends them on: after
`ttft` seconds, one content event every 1/`tps` seconds, and as the fault says, an `event: error` frame in place of
event N (`stream_error_after`) or the end of the body there (`drop_after`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable

from .faults import Fault


async def paced(
    events: AsyncIterable[tuple[bytes, bool]], fault: Fault | None, ttft: float, tps: float | None
) -> AsyncGenerator[bytes, None]:
    error_after = fault.stream_error_after if fault else None
    drop_after = fault.drop_after if fault else None
    if ttft > 0:
        await asyncio.sleep(ttft)
    sent = 0
    async for chunk, is_content in events:
        if drop_after is not None and sent >= drop_after:
            return
        if fault is not None and error_after is not None and sent >= error_after:
            yield fault.stream_error_event()
            return
        if is_content and tps:
            await asyncio.sleep(1 / tps)
        yield chunk
        sent += 1
