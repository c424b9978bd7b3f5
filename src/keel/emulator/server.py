"""Serving the emulator over loopback with uvicorn: in the foreground (`keel emulator serve`) or a thread."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .reset import with_reset

ServerFactory = Callable[[uvicorn.Config], uvicorn.Server]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ResettableHTTP(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, offering the app a way to reset the connection (`reset.RESET_EXTENSION`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = cast(Any, self).app  # uvicorn sets it from its config

        async def offering_reset(scope: Any, receive: Any, send: Any) -> None:
            with_reset(scope, self.reset)
            await app(scope, receive, send)

        self.app = offering_reset

    def reset(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0): the client reads `Connection reset by peer`."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def _config(app: Any, host: str, port: int, options: dict[str, Any]) -> uvicorn.Config:
    settings: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "http": ResettableHTTP,
        **options,
    }
    return uvicorn.Config(app, host=host, port=port, **settings)


def listen(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A socket bound to host:port and listening (connections queue until `serve` answers them); OSError when the
    port is taken or the address is not this host's."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: Any, sock: socket.socket, *, server: ServerFactory = uvicorn.Server, **options: Any) -> None:
    """Serve on a `listen` socket until Ctrl-C: uvicorn finishes in-flight requests, then re-raises the signal, which
    ends here. `server` makes the uvicorn server (a subclass may act on the signal); `options` go to
    `uvicorn.Config`."""
    host, port = sock.getsockname()[:2]
    with contextlib.suppress(KeyboardInterrupt), sock:
        server(_config(app, host, port, options)).run(sockets=[sock])


class BackgroundServer:
    """An app (the emulator, by default) on loopback in a daemon thread; a context manager that waits until it
    listens. `server` and `options` as for `serve`; `stop()` acts as a Ctrl-C would."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        server: ServerFactory = uvicorn.Server,
        **options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server = server(_config(app, host, self.port, options))
        self._thread = threading.Thread(target=self._server.run, name="keel-emulator-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start listening on {self.base_url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.handle_exit(signal.SIGINT, None)
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
