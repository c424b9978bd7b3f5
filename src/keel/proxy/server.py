"""Serving the proxy with uvicorn: in the foreground until Ctrl-C (`keel proxy`), or on a thread (tests, benchmarks).

Ctrl-C stops it cleanly: new connections are refused, every stream in flight ends at once with an `event: error`
frame and a proper end of body (its upstream response closed), other requests get up to `GRACE_SECONDS` to finish,
then the upstream connections, the cassette and the access log are closed. A second Ctrl-C stops it at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType
from typing import Any

import uvicorn

from keel.emulator.server import BackgroundServer, serve

from .app import Proxy, UpstreamBrokeOff

GRACE_SECONDS = 10
# upstream response headers go back as they are: uvicorn adds no `server` or `date` of its own
OPTIONS: dict[str, Any] = {
    "lifespan": "on",
    "server_header": False,
    "date_header": False,
    "timeout_graceful_shutdown": GRACE_SECONDS,
}


class ProxyServer(uvicorn.Server):
    """uvicorn's server, which also ends the proxy's streams in flight when told to stop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        assert isinstance(config.app, Proxy)
        self.proxy = config.app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.proxy.close_streams)
        super().handle_exit(sig, frame)


class _QuietBrokenStreams(logging.Filter):
    """An upstream that broke off a stream is the access log's news: no traceback from uvicorn for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamBrokeOff))


def _quiet() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _QuietBrokenStreams) for existing in logger.filters):
        logger.addFilter(_QuietBrokenStreams())


def serve_proxy(proxy: Proxy, sock: socket.socket) -> None:
    """Serve `proxy` until Ctrl-C."""
    _quiet()
    serve(proxy, sock, server=ProxyServer, **OPTIONS)


class BackgroundProxy(BackgroundServer):
    """The proxy on loopback in a daemon thread; a context manager; `stop()` acts as a Ctrl-C would."""

    def __init__(self, proxy: Proxy, host: str = "127.0.0.1", port: int | None = None) -> None:
        _quiet()
        super().__init__(proxy, host, port, server=ProxyServer, **OPTIONS)
        self.proxy = proxy
