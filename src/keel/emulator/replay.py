"""Replaying a cassette: the emulator answers requests it finds there with the recorded responses.

Matching is on the canonical request: method, path, query and the JSON body with its keys sorted, scrubbed as the
recorder scrubbed it, without the ignored fields (`DEFAULT_IGNORED`, or the caller's: top-level names or dotted
paths such as `metadata.user_id`). Repeats of one request are answered in recorded order, and the last of them again
once they run out (a batch polled more often than when it was recorded stays at its last state). A request the
cassette does not hold is a miss: `on_miss="generate"` lets the emulator answer it as usual, `"error"` answers a
404 naming the closest recorded request and where it differs.

Timing is the recording's, divided by `speed` (2: twice as fast; `inf`: no waiting): the response head after
`head_ms`, each SSE event at its offset, a JSON answer after `done_ms`.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from starlette.responses import Response, StreamingResponse

from .cassette import Cassette, Event, Exchange, scrub
from .errors import ApiError
from .faults import Fault
from .pacing import paced

DEFAULT_IGNORED = ("metadata",)
OnMiss = Literal["generate", "error"]


def canonical(method: str, path: str, query: str, body: Any, ignored: Sequence[str] = DEFAULT_IGNORED) -> str:
    """The key a request is matched on: one JSON text, the same for requests that differ only in key order, in what
    the recorder scrubs, or in ignored fields."""
    cleaned = scrub(body)
    for dotted in ignored:
        cleaned = _without(cleaned, dotted.split("."))
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return json.dumps([method.upper(), path, urlencode(pairs), cleaned], sort_keys=True, separators=(",", ":"))


def _without(value: Any, path: list[str]) -> Any:
    if not isinstance(value, dict) or path[0] not in value:
        return value
    if len(path) == 1:
        return {key: item for key, item in value.items() if key != path[0]}
    return {**value, path[0]: _without(value[path[0]], path[1:])}


def first_difference(recorded: Any, sent: Any, where: str = "") -> str | None:
    """Where two JSON values first differ (`messages.0.content: recorded 'Hi', sent 'Hello'`), None if equal."""
    if isinstance(recorded, dict) and isinstance(sent, dict):
        for key in sorted(set(recorded) | set(sent)):
            here = f"{where}.{key}" if where else key
            if key not in sent:
                return f"{here}: recorded, not sent"
            if key not in recorded:
                return f"{here}: sent, not recorded"
            found = first_difference(recorded[key], sent[key], here)
            if found:
                return found
        return None
    if isinstance(recorded, list) and isinstance(sent, list):
        for index, (old, new) in enumerate(zip(recorded, sent, strict=False)):
            found = first_difference(old, new, f"{where}.{index}" if where else str(index))
            if found:
                return found
        if len(recorded) != len(sent):
            return f"{where or 'body'}: {len(recorded)} items recorded, {len(sent)} sent"
        return None
    if recorded == sent:
        return None
    return f"{where or 'body'}: recorded {_short(recorded)}, sent {_short(sent)}"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Replayer:
    """Answers from a cassette; thread-safe (one emulator may serve several loops)."""

    def __init__(
        self,
        cassette: Cassette,
        *,
        speed: float = 1.0,
        on_miss: OnMiss = "generate",
        ignored: Sequence[str] = DEFAULT_IGNORED,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"replay speed must be > 0 (inf: no waiting), got {speed!r}")
        if on_miss not in ("generate", "error"):
            raise ValueError(f"on_miss must be 'generate' or 'error', got {on_miss!r}")
        self.cassette = cassette
        self.speed = speed
        self.on_miss = on_miss
        self.ignored = tuple(ignored)
        self._recorded: dict[str, list[Exchange]] = {}
        for exchange in cassette.exchanges:
            key = canonical(exchange.method, exchange.path, exchange.query, exchange.request, self.ignored)
            self._recorded.setdefault(key, []).append(exchange)
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, method: str, path: str, query: str, body: Any) -> Exchange | None:
        """The next recorded answer to this request (the last one again once they run out), None for a miss."""
        key = canonical(method, path, query, body, self.ignored)
        with self._lock:
            found = self._recorded.get(key)
            if not found:
                return None
            served = self._served.get(key, 0)
            self._served[key] = served + 1
        return found[min(served, len(found) - 1)]

    def miss(self, method: str, path: str, query: str, body: Any) -> ApiError:
        """The 404 for a request the cassette does not hold, naming the closest recorded request."""
        sent = f"{method} {path}{'?' + query if query else ''}"
        message = f"keel replay: no exchange in {self.cassette.path} matches {sent}"
        closest = self._closest(method, path, query, body)
        if closest is None:
            return ApiError(404, message + " (the cassette holds no exchange)")
        if (closest.method, closest.path, closest.query) != (method, path, query):
            return ApiError(404, f"{message}; the closest recorded request is {closest.describe()}, on another route")
        difference = first_difference(
            json.loads(canonical(closest.method, closest.path, closest.query, closest.request, self.ignored))[3],
            json.loads(canonical(method, path, query, body, self.ignored))[3],
        )
        return ApiError(
            404, f"{message}; the closest recorded request is {closest.describe()}, which differs at {difference}"
        )

    def _closest(self, method: str, path: str, query: str, body: Any) -> Exchange | None:
        sent = canonical(method, path, query, body, self.ignored)
        candidates = [found[0] for found in self._recorded.values()]
        same_route = [ex for ex in candidates if ex.method == method and ex.path == path]

        def likeness(exchange: Exchange) -> float:
            text = canonical(exchange.method, exchange.path, exchange.query, exchange.request, self.ignored)
            return difflib.SequenceMatcher(None, text, sent, autojunk=False).ratio()

        return max(same_route or candidates, key=likeness, default=None)

    # --- answering ---------------------------------------------------------------------------------

    def _wait(self, ms: float) -> float:
        return 0.0 if math.isinf(self.speed) else ms / 1000 / self.speed

    async def respond(self, exchange: Exchange, fault: Fault | None, base_url: str) -> Response:
        """The recorded response, on the recorded timing scaled by `speed`, with any stream fault layered on."""
        started = time.perf_counter()
        extra = ((fault.ttft_ms or 0) + (fault.latency_ms or 0)) / 1000 if fault else 0.0
        headers = {name: value for name, value in exchange.headers.items() if name != "content-type"}
        media_type = exchange.headers.get("content-type")
        if exchange.events is not None:
            await asyncio.sleep(self._wait(exchange.head_ms))
            events = self._timed(exchange.events, started)
            return StreamingResponse(
                paced(events, fault, extra, fault.tps if fault else None),
                status_code=exchange.status,
                headers=headers,
                media_type=media_type or "text/event-stream; charset=utf-8",
            )
        await asyncio.sleep(self._wait(exchange.done_ms) + extra)
        body = exchange.body
        if isinstance(body, str):
            content = body.encode()
        else:
            body = _local_results_urls(body, base_url)
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return Response(content, status_code=exchange.status, headers=headers, media_type=media_type)

    async def _timed(self, events: list[Event], started: float) -> AsyncIterator[tuple[bytes, bool]]:
        for event in events:
            delay = started + self._wait(event.at_ms) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield event.wire(), event.name == "content_block_delta"


def _local_results_urls(body: Any, base_url: str) -> Any:
    """A batch (or a page of them) with `results_url` on this emulator: where it was recorded is out of reach now."""
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        return {**body, "data": [_local_results_urls(item, base_url) for item in body["data"]]}
    if isinstance(body, dict) and isinstance(body.get("results_url"), str):
        path = "/v1/" + body["results_url"].split("/v1/", 1)[-1]
        return {**body, "results_url": base_url.rstrip("/") + path}
    return body
