"""Resetting a client's connection, the `connection_reset` fault: no answer at all, as a dropped TCP connection.

ASGI has no message for "reset the connection", so the servers keel runs the emulator and the proxy on offer it
as a scope extension, `RESET_EXTENSION`, a function that resets the request's connection: uvicorn under
`keel.emulator.server` (a TCP RST: the client reads `Connection reset by peer`) and the in-process transports
(httpx2's `ReadError`, what the client would have read from the socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any

RESET_EXTENSION = "keel.connection_reset"


def with_reset(scope: MutableMapping[str, Any], reset: Callable[[], None]) -> None:
    """Offer `reset` to the app in the request's scope."""
    extensions = scope.get("extensions") or {}
    scope["extensions"] = {**extensions, RESET_EXTENSION: reset}


async def reset_connection(scope: MutableMapping[str, Any]) -> None:
    """Reset the request's connection, sending nothing; a server without the extension cannot, and raises."""
    reset = (scope.get("extensions") or {}).get(RESET_EXTENSION)
    if reset is None:
        raise RuntimeError(
            "connection_reset needs a server that can reset a connection (keel emulator serve, or the in-process "
            "transports)"
        )
    reset()
    await asyncio.sleep(0)  # the server notes the lost connection before the app returns without an answer
