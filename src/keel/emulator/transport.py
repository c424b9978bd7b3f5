"""In-process transports: the SDK talks to the emulator's ASGI app with no socket.

The request's read timeout is honoured as a socket would: no response head, or no next chunk, within it
raises httpx2's `ReadTimeout` (the SDK's `APITimeoutError`).

`httpx2.ASGITransport` is async-only and collects the whole body before returning, so a stream's
time to first token, its pacing and a mid-stream drop would all be invisible in-process. These
transports hand the body over chunk by chunk, exactly as the app sends it (holding the app back while a
few chunks are unread, so a large body never piles up); the sync one runs the app on a private event loop
thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any, TypeVar

import httpx2

from .reset import with_reset

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
_END = object()
T = TypeVar("T")
_BUFFERED_CHUNKS = 32  # the app waits when this many chunks are unread: a large body never piles up in memory


class _Exchange:
    """One request/response exchange with the app: the response head, then body chunks from a queue."""

    def __init__(self, app: ASGIApp, request: httpx2.Request, body: bytes) -> None:
        self._app = app
        self._request = request
        self._body = body
        self._chunks: asyncio.Queue[object] = asyncio.Queue(_BUFFERED_CHUNKS)
        self._started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        timeouts = request.extensions.get("timeout") or {}
        self._read_timeout: float | None = timeouts.get("read")  # as on a socket: the longest wait for data

    def _scope(self) -> dict[str, Any]:
        url = self._request.url
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": self._request.method,
            "headers": [(k.lower(), v) for (k, v) in self._request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        with_reset(scope, self._reset)
        return scope

    def _reset(self) -> None:
        """The app reset the connection before answering: the client reads what a socket would give it."""
        if not self._started.done():
            self._started.set_exception(httpx2.ReadError("[Errno 104] Connection reset by peer"))

    async def start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": self._body, "more_body": False}
            await self._done.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self._started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body:
                    await self._chunks.put(body)
                if not message.get("more_body", False):
                    await self._chunks.put(_END)

        async def run() -> None:
            try:
                await self._app(self._scope(), receive, send)
            except Exception as err:
                if not self._started.done():
                    self._started.set_exception(err)
                if not self._done.is_set():
                    await self._chunks.put(err)
            finally:
                if not self._done.is_set():  # once the reader has gone, nobody would take it off a full queue
                    await self._chunks.put(_END)

        self._task = asyncio.ensure_future(run())
        return await self._within_read_timeout(asyncio.shield(self._started))

    async def _within_read_timeout(self, waiting: Awaitable[T]) -> T:
        """Wait like a socket read would: past the request's read timeout, httpx2's ReadTimeout."""
        try:
            return await asyncio.wait_for(waiting, self._read_timeout)
        except TimeoutError:
            await self.aclose()
            raise httpx2.ReadTimeout(f"no data from the emulator within {self._read_timeout:g} s") from None

    async def next_chunk(self) -> bytes | None:
        item = await self._within_read_timeout(self._chunks.get())
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise httpx2.RemoteProtocolError("the emulator app failed mid-response") from item
        assert isinstance(item, bytes)
        return item

    async def aclose(self) -> None:
        self._done.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()


class _AsyncBody(httpx2.AsyncByteStream):
    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._exchange.next_chunk()) is not None:
            yield chunk

    async def aclose(self) -> None:
        await self._exchange.aclose()


class AsyncEmulatorTransport(httpx2.AsyncBaseTransport):
    """Async transport that streams responses from an ASGI app in the caller's event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        exchange = _Exchange(self.app, request, body)
        status, headers = await exchange.start()
        return httpx2.Response(status, headers=headers, stream=_AsyncBody(exchange))


class _LoopThread:
    """A private event loop on a daemon thread, where the sync transport runs the app."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="keel-emulator-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(_await(coro), self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


async def _await(coro: Awaitable[Any]) -> Any:
    return await coro


class _SyncBody(httpx2.SyncByteStream):
    def __init__(self, exchange: _Exchange, runner: _LoopThread) -> None:
        self._exchange = exchange
        self._runner = runner

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._runner.run(self._exchange.next_chunk())) is not None:
            yield chunk

    def close(self) -> None:
        self._runner.run(self._exchange.aclose())


class EmulatorTransport(httpx2.BaseTransport):
    """Sync transport: each request runs in the app on a private loop thread; the body streams back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._runner: _LoopThread | None = None
        self._lock = threading.Lock()

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self._runner is None:
                self._runner = _LoopThread()
            return self._runner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        runner = self._loop()
        body = request.read()

        async def start() -> tuple[_Exchange, tuple[int, list[tuple[bytes, bytes]]]]:
            exchange = _Exchange(self.app, request, body)
            return exchange, await exchange.start()

        exchange, (status, headers) = runner.run(start())
        return httpx2.Response(status, headers=headers, stream=_SyncBody(exchange, runner))

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.stop()
                self._runner = None
