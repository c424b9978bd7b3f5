"""The proxy's ASGI app: every request goes upstream untouched (the client's key included) and every response comes
back, SSE (and any other body that is not JSON, such as batch results) as it arrives, with the emulator's faults
applied to real traffic on the way.

- A fault (the `x-keel-fault` header, or a rule of the scenario) with a `status` answers that error in the API's shape
  without going upstream, one with `connection_reset` resets the client's connection without answering;
  `ttft_ms` / `latency_ms` / `tps` delay the answer (a stream: its first event, then each
  content event); `stream_error_after` / `drop_after` end a stream after N events with an `event: error` frame, or
  with nothing. The `x-keel-fault` header is never forwarded.
- An upstream that cannot be reached is a 502 `api_error` naming it (credentials redacted); one that does not answer
  within `read_timeout` a 504 `timeout_error`; one that breaks off a stream ends the client's stream abruptly too.
- With a cassette, each exchange the upstream answered whole is written to it (scrubbed; see
  `keel.emulator.cassette`); injected errors and streams cut short by a fault, the client or a shutdown are not.
- `results_url` in the upstream's Message Batches answers points back at the proxy, so the results come through it.
- On shutdown (`close_streams`), every stream of events in flight ends with an `event: error` frame (`api_error`) and
  a proper end of body, its upstream response closed; other requests finish within the server's grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from jiter import from_json
from pydantic_core import to_json
from yarl import URL

from keel._exceptions import ProxyConfigError
from keel.emulator.cassette import CassetteWriter, Event, Exchange, canonical_body, kept_headers
from keel.emulator.errors import ApiError
from keel.emulator.faults import FAULT_HEADER, ConnectionResetFault, Fault, Scenario
from keel.emulator.keys import key_id
from keel.emulator.pacing import paced
from keel.emulator.render import new_id
from keel.emulator.reset import reset_connection
from keel.ratelimit.urls import redact_text, redact_url

from .log import ProxyEntry, ProxyLog
from .sse import EventSplitter, coalesced, is_content, parse_event

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# not forwarded either way: they describe one connection, or the proxy's own encoding of the body
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"trailer", b"upgrade"}
)
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"transfer-encoding", FAULT_HEADER.encode()}
_NOT_RETURNED = HOP_BY_HOP | {b"content-length", b"content-encoding", b"transfer-encoding"}
_URLS_KEPT = 1024  # parsed upstream URLs kept for reuse
# headers aiohttp would add to a request of its own: the client's request goes upstream as it came
_NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
SHUTDOWN_MESSAGE = "keel proxy: shutting down; the stream was closed before the upstream finished it"


@dataclass
class ProxyConfig:
    """How the proxy behaves.

    Attributes:
        upstream: the API's base URL (`https://api.anthropic.com`, or a `keel emulator serve`).
        scenario: fault rules, the emulator's scenario language (rate limits and batch shares do not apply here).
        record: a cassette file to add each exchange to (None: record nothing).
        access_log: also write the access log to this file, one JSON line per exchange.
        echo: where to print one line per exchange (None: nowhere).
        connect_timeout: seconds to connect to the upstream.
        read_timeout: seconds to wait for the upstream's next bytes (a long non-streamed answer takes minutes).
    """

    upstream: str
    scenario: Scenario = field(default_factory=Scenario)
    record: Path | None = None
    access_log: Path | None = None
    echo: Callable[[str], None] | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 600.0


def _check(config: ProxyConfig) -> str:
    """The upstream base URL without a trailing slash; a configuration the proxy cannot honour raises."""
    parts = urlsplit(config.upstream)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProxyConfigError(f"--upstream must be an http(s) URL with a host, got {redact_url(config.upstream)!r}")
    if config.scenario.limits is not None:
        raise ProxyConfigError(
            "the scenario's [limits] table is the emulator's own rate limiting and does not apply to the proxy; "
            "inject rate-limit 429s with a rule instead (status = 429, retry_after = N, with probability or limit)"
        )
    shares = [rule for rule in config.scenario.rules if rule.fault.batch_only]
    if shares:
        raise ProxyConfigError(
            "errored_share / expired_share shape the batches the emulator makes; the proxy cannot apply them"
        )
    return config.upstream.rstrip("/")


class Proxy:
    """The ASGI app of `keel proxy`. Call it like any ASGI app; `close_streams()` on shutdown, `aclose()` after."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.upstream = _check(config)
        self.shown_upstream = redact_url(self.upstream)
        self.upstream_url = re.compile(re.escape(self.upstream.encode()) + rb'(?=[/"])')
        self.scenario = config.scenario
        self.log = ProxyLog(config.access_log)
        self.cassette = CassetteWriter(config.record, upstream=self.shown_upstream) if config.record else None
        parts = urlsplit(self.upstream)
        # the environment's HTTP(S) proxy for the upstream's scheme, unless `no_proxy` exempts its host
        self.through = None if proxy_bypass(parts.hostname or "") else getproxies().get(parts.scheme)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[bytes, URL] = {}
        self._streams: set[_Relay] = set()

    def url(self, path: bytes, query: bytes) -> URL:
        """The upstream URL of a request's path and query, as the client encoded them (parsed once per distinct
        target: most are the same)."""
        target = path + b"?" + query if query else path
        found = self._urls.get(target)
        if found is None:
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()
            url = URL(self.upstream + target.decode("latin-1"), encoded=True)
            found = self._urls[target] = url.with_user(None)  # credentials in --upstream are not sent upstream
        return found

    def session(self) -> aiohttp.ClientSession:
        """The connections to the upstream, kept alive between requests (made on first use, in the serving loop).

        aiohttp rather than httpx2: its C response parser and short request path take about a quarter of httpx2's CPU
        per request, which halves the proxy's (docs/benchmarks.md, keel proxy). No cookies kept, no redirects
        followed, no headers of its own added."""
        if self._session is None:
            config = self.config
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_NOT_ADDED,
            )
        return self._session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _Relay(self, scope, receive, send).run()
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close_streams(self) -> None:
        """End every stream of events in flight: each gets an `event: error` frame and a proper end of body."""
        for relay in list(self._streams):
            relay.stop(SHUTDOWN_MESSAGE)

    async def aclose(self) -> None:
        """Close the upstream connections, the cassette and the access-log file."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.cassette is not None:
            self.cassette.close()
        self.log.close()


class _Relay:
    """One exchange: the client's request, the upstream's answer (or an injected one), the log entry, the record."""

    def __init__(self, proxy: Proxy, scope: Scope, receive: Receive, send: Send) -> None:
        self.proxy = proxy
        self.scope = scope
        self.receive = receive
        self.send = send
        self.started = time.perf_counter()
        self.at = time.time()
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.key: str | None = None
        self.model: str | None = None
        self.stream = False
        self.fault: Fault | None = None
        self.status = 0
        self.request_id: str | None = None
        self.head_ms = 0.0
        self.error: str | None = None
        self.recorded = False
        self.task: asyncio.Task[Any] | None = None  # while a stream is relayed
        self.stopped: str | None = None  # why the stream was ended early by the proxy
        self.upstream_done = False  # the upstream's stream was read to its end

    def _ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def _header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    async def run(self) -> None:
        body = await self._read_body()
        if body is None:
            self.error = "the client went away"
            self._log()
            return
        request = self._parse(body)
        try:
            attempt = self._header(b"x-stainless-retry-count") or ""
            self.fault = self.proxy.scenario.choose(
                self._header(FAULT_HEADER.encode()),
                self.scope["path"],
                self.model,
                int(attempt) if attempt.isdigit() else 0,
            )
            if self.fault is not None:
                self.fault.raise_before_answering()
            await self._forward(body, request)
        except ApiError as err:
            await self._answer_error(err)
        except ConnectionResetFault:
            self.error = "the connection was reset (injected)"
            await reset_connection(self.scope)
        finally:
            self._log()

    async def _read_body(self) -> bytes | None:
        """The request body; None when the client went away before sending all of it."""
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _parse(self, body: bytes) -> Any:
        """The request's JSON body (its text when it is not JSON, None without one); notes the key, model, stream."""
        key = self._header(b"x-api-key")
        if key is None:
            scheme, _, token = (self._header(b"authorization") or "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        self.key = key
        try:
            request = from_json(body) if body else None
        except ValueError:
            return body.decode("utf-8", "replace")
        if isinstance(request, dict):
            model = request.get("model")
            self.model = model if isinstance(model, str) else None
            self.stream = request.get("stream") is True
        return request

    async def _answer_error(self, err: ApiError) -> None:
        """An error the proxy gives itself (an injected fault, an unreachable upstream), in the API's shape."""
        self.status = err.status
        self.request_id = new_id("req_011C", 20)
        self.stream = False
        body = to_json(err.body(self.request_id))
        headers = [(b"content-type", b"application/json"), (b"request-id", self.request_id.encode())]
        headers += [(name.encode(), value.encode()) for name, value in err.headers.items()]
        await self._fault_delay()
        self.head_ms = self._ms()
        await self._respond(err.status, headers, body)

    async def _fault_delay(self, output_tokens: int = 0) -> None:
        fault = self.fault
        if fault is None:
            return
        delay = ((fault.ttft_ms or 0) + (fault.latency_ms or 0)) / 1000
        delay += output_tokens / fault.tps if fault.tps else 0
        if delay > 0:
            await asyncio.sleep(delay)

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    # --- forwarding ---------------------------------------------------------------------------------

    async def _forward(self, body: bytes, request: Any) -> None:
        proxy = self.proxy
        path = self.scope.get("raw_path") or self.scope["path"].encode()
        query = self.scope.get("query_string") or b""
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.headers
            if name not in _NOT_FORWARDED
        ]
        try:
            response = await proxy.session().request(
                self.scope["method"],
                proxy.url(path, query),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                proxy=proxy.through,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise self._upstream_error(502, "api_error", "is unreachable", exc) from None
        except TimeoutError as exc:
            raise self._upstream_error(504, "timeout_error", "did not answer in time", exc) from None
        except aiohttp.ClientError as exc:
            raise self._upstream_error(502, "api_error", "failed", exc) from None
        self.head_ms = self._ms()
        self.status = response.status
        self.request_id = response.headers.get("request-id")
        content_type = response.headers.get("content-type", "")
        self.stream = content_type.startswith("text/event-stream")
        try:
            if self.stream or not _is_json(content_type):
                await self._relay_streamed(response, request)  # SSE, or a body that may be large (batch results)
            else:
                await self._relay_body(response, request)
        finally:
            response.release()  # back to the pool when read to its end; a body cut short closes its connection

    def _upstream_error(self, status: int, error_type: str, what: str, exc: Exception) -> ApiError:
        detail = redact_text(str(exc) or type(exc).__name__, self.proxy.upstream)
        self.error = f"{type(exc).__name__}: {detail}"
        message = f"keel proxy: the upstream {self.proxy.shown_upstream} {what} ({self.error})"
        return ApiError(status, message, error_type=error_type)

    def _response_headers(self, response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
        return [(name.lower(), value) for name, value in response.raw_headers if name.lower() not in _NOT_RETURNED]

    async def _relay_body(self, response: aiohttp.ClientResponse, request: Any) -> None:
        try:
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._upstream_error(502, "api_error", "broke off its answer", exc) from None
        content = self._local_urls(content)
        tokens = 0
        if self.fault is not None and self.fault.tps:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                tokens = int(from_json(content)["usage"]["output_tokens"])
        await self._fault_delay(tokens)
        await self._respond(response.status, self._response_headers(response), content)
        if self.proxy.cassette is not None:
            self._record(response, request, body=_body_value(content, response.headers.get("content-type", "")))

    def _local_urls(self, content: bytes) -> bytes:
        """Upstream URLs in the answer (a batch's `results_url`) pointing at the proxy instead."""
        if self.proxy.upstream.encode() not in content:
            return content
        host = self._header(b"host") or "{}:{}".format(*self.scope["server"])
        here = f"{self.scope.get('scheme', 'http')}://{host}".encode()
        return self.proxy.upstream_url.sub(lambda _: here, content)

    async def _relay_streamed(self, response: aiohttp.ClientResponse, request: Any) -> None:
        """A body passed on as it arrives. A stream of events takes the fault's pacing and cuts, and a shutdown ends it
        with an `event: error` frame; any other body (batch results) is a download, given the shutdown's grace."""
        await self.send(
            {"type": "http.response.start", "status": response.status, "headers": self._response_headers(response)}
        )
        recording = self.proxy.cassette is not None
        events: list[Event] | None = [] if recording and self.stream else None
        raw: list[bytes] | None = [] if recording and not self.stream else None
        self.task = asyncio.current_task()
        if self.stream:
            self.proxy._streams.add(self)
        watcher = asyncio.ensure_future(self._watch_client())
        try:
            async with contextlib.aclosing(self._stream_out(response, events, raw)) as chunks:
                async for chunk in chunks:
                    await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            if self.stopped is None:
                raise  # not ours to swallow: the server is cancelling the request
            assert self.task is not None
            self.task.uncancel()
            if self.stopped == SHUTDOWN_MESSAGE:
                error = ApiError(500, SHUTDOWN_MESSAGE, error_type="api_error").error_object()
                frame = b"event: error\ndata: " + to_json({"type": "error", "error": error}) + b"\n\n"
                await self.send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            watcher.cancel()
            self.proxy._streams.discard(self)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        if not self.upstream_done or self.stopped is not None:
            return
        if events is not None and not self._cut_by_fault(events):
            self._record(response, request, events=events)
        elif raw is not None:
            self._record(response, request, body=_body_value(b"".join(raw), response.headers.get("content-type", "")))

    def stop(self, reason: str) -> None:
        """End this stream now (the client went away, or the proxy is shutting down)."""
        if self.task is not None and self.stopped is None:
            self.stopped = reason
            self.error = reason
            self.task.cancel()

    def _cut_by_fault(self, events: list[Event]) -> bool:
        """Whether a fault ended the client's stream before the last event (the upstream's was read whole)."""
        fault = self.fault
        cuts = [n for n in (fault.stream_error_after, fault.drop_after) if n is not None] if fault else []
        return bool(cuts) and min(cuts) < len(events)

    async def _watch_client(self) -> None:
        """Stop relaying a stream when its client goes away."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.stop("the client went away")

    async def _stream_out(
        self, response: aiohttp.ClientResponse, events: list[Event] | None, raw: list[bytes] | None
    ) -> AsyncGenerator[bytes, None]:
        """The upstream's body as it arrives (what arrived together, sent together), or event by event when a fault
        paces or cuts a stream of events."""
        fault = self.fault if self.stream else None
        chunks = self._upstream_chunks(response, events, raw)
        if fault is None:
            async with contextlib.aclosing(coalesced(chunks)) as arrived:
                async for data in arrived:
                    yield data
            return
        async with contextlib.aclosing(paced(self._events(chunks), fault, 0.0, fault.tps)) as paced_events:
            async for event in paced_events:
                yield event

    async def _upstream_chunks(
        self, response: aiohttp.ClientResponse, events: list[Event] | None, raw: list[bytes] | None
    ) -> AsyncIterator[bytes]:
        """The upstream's body; with `events`, each complete event noted there as it arrives; with `raw`, every
        chunk kept there."""
        splitter = EventSplitter()
        try:
            async for chunk in response.content.iter_any():
                if events is not None:
                    self._note(splitter.feed(chunk), events)
                elif raw is not None:
                    raw.append(chunk)
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error = f"the upstream broke off the stream ({type(exc).__name__})"
            raise UpstreamBrokeOff(self.error) from exc
        self.upstream_done = True

    async def _events(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bool]]:
        """The upstream's events one by one; a fault's ttft / latency hold back the first one."""
        fault = self.fault
        delay = ((fault.ttft_ms or 0) + (fault.latency_ms or 0)) / 1000 if fault else 0.0
        splitter = EventSplitter()
        async for chunk in chunks:
            for event in splitter.feed(chunk):
                if delay:
                    await asyncio.sleep(delay)
                    delay = 0.0
                yield event, is_content(event)

    def _note(self, complete: list[bytes], events: list[Event]) -> None:
        at = self._ms()
        for raw in complete:
            event = parse_event(raw, at)
            if event is not None:
                events.append(event)

    # --- the record -----------------------------------------------------------------------------------

    def _record(
        self, response: aiohttp.ClientResponse, request: Any, *, body: Any = None, events: list[Event] | None = None
    ) -> None:
        cassette = self.proxy.cassette
        assert cassette is not None
        exchange = Exchange(
            method=self.scope["method"],
            path=self.scope["path"],
            query=(self.scope.get("query_string") or b"").decode("latin-1"),
            request=canonical_body(request),
            status=response.status,
            headers=kept_headers(response.headers.items()),
            body=body,
            events=events,
            head_ms=self.head_ms,
            done_ms=self._ms(),
        )
        cassette.write(exchange, secrets=(self.key,) if self.key else ())
        self.recorded = True

    def _log(self) -> None:
        retry = self._header(b"x-stainless-retry-count") or ""
        entry = ProxyEntry(
            at=self.at,
            method=self.scope["method"],
            path=self.scope["path"],
            status=self.status,
            request_id=self.request_id,
            head_ms=self.head_ms,
            total_ms=self._ms(),
            fault=self.fault.describe() if self.fault else None,
            model=self.model,
            stream=self.stream,
            key_id=key_id(self.key) if self.key else None,
            retry_count=int(retry) if retry.isdigit() else None,
            recorded=self.recorded,
            error=self.error,
        )
        self.proxy.log.append(entry)
        if self.proxy.config.echo is not None:
            self.proxy.config.echo(entry.line())


class UpstreamBrokeOff(Exception):
    """The upstream's stream broke off: the client's stream is broken off too (uvicorn closes the connection)."""


def _is_json(content_type: str) -> bool:
    return "json" in content_type and "jsonl" not in content_type


def _body_value(content: bytes, content_type: str) -> Any:
    """A non-SSE body as a cassette keeps it: parsed JSON, or the text."""
    if _is_json(content_type):
        with contextlib.suppress(ValueError):
            return from_json(content)
    return content.decode("utf-8", "replace")
