"""The emulator's ASGI app: `/v1/messages` (JSON and SSE), count_tokens, models, Message Batches, with faults
and an access log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jiter import from_json
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .access_log import AccessLog
from .batches import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, Batch, BatchStore
from .cassette import Cassette, read_cassette
from .catalog import ModelSpec, capabilities, load_catalog
from .clock import Clock
from .errors import ApiError, invalid
from .faults import FAULT_HEADER, ConnectionResetFault, Fault, Rule, Scenario, parse_fault_header
from .keys import key_id
from .openapi import openapi_document
from .pacing import paced
from .prompt_cache import PromptCache
from .ratelimit import Admission, RateLimiter, RateLimits
from .render import message_json, new_id, sse_events
from .replay import DEFAULT_IGNORED, OnMiss, Replayer
from .reset import reset_connection
from .responder import Generation, generate
from .validation import check_version, resolve_model, validate

DEFAULT_API_KEY = "keel-emulator-key"
MESSAGES_MAX_BYTES = 32 * 1024 * 1024
JSON_TYPE = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-robots-tag": "none"}
ORGANIZATION_ID = "00000000-0000-4000-8000-00000000e1e1"


@dataclass
class EmulatorConfig:
    """How the emulator behaves. `api_key=None` accepts any non-empty key."""

    api_key: str | None = field(default=DEFAULT_API_KEY, repr=False)  # a secret: not in a repr or a traceback
    seed: int = 0
    scenario: Scenario = field(default_factory=Scenario)
    ttft_ms: float = 0.0  # time before a response starts (streams: before message_start)
    tps: float | None = None  # output tokens per second (None: as fast as possible)
    max_body_bytes: int = MESSAGES_MAX_BYTES
    rate_limits: RateLimits | None = None  # None: the scenario's `limits`, else the defaults (reported, not enforced)
    clock: Clock = field(default_factory=Clock)  # rate-limit buckets and prompt-cache lifetimes run on it
    access_log: Path | None = None  # also write the access log to this file, one JSON line per request
    # Message Batches (see docs/emulator.md): body and size limits, and the batch clock
    max_batch_bytes: int = MAX_BATCH_BYTES
    max_batch_requests: int = MAX_BATCH_REQUESTS
    batch_speed: float = 1.0  # simulated seconds per real second (3600: an hour a second; 0: only advance())
    batch_duration: float = 60.0  # simulated seconds a small batch takes (grows with size, +-20% by seed)
    batch_stall: bool = False  # batches never progress: every request expires at 24 h
    # Replay (see docs/proxy.md): answer the requests a cassette holds with its recorded responses
    replay: Cassette | Path | None = None
    replay_speed: float = 1.0  # recorded timing divided by this (inf: no waiting)
    on_miss: OnMiss = "generate"  # a request the cassette does not hold: generated as usual, or a 404 ("error")
    replay_ignore: tuple[str, ...] = DEFAULT_IGNORED  # body fields (dotted paths) left out of matching


@dataclass
class _Call:
    """What the access log records about one request, filled in as handling proceeds."""

    request_id: str
    retry_count: int | None
    key_id: str | None  # the fingerprint of the API key sent
    model: str | None = None
    stream: bool = False
    fault: Fault | None = None
    fault_chosen: bool = False  # the fault was chosen already (a replay chose it before the request was generated)


def _dumps(data: Any) -> bytes:
    return to_json(data)


class Emulator:
    """An ASGI application emulating the Claude API. Call it like any ASGI app."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.access_log = AccessLog(self.config.access_log)
        self.clock = self.config.clock
        self.rate_limits = self.config.rate_limits or self.config.scenario.limits or RateLimits()
        self.limiter = RateLimiter(self.rate_limits, self.clock, ORGANIZATION_ID)
        self.prompt_cache = PromptCache(self.clock)
        self.batches = BatchStore(
            seed=self.config.seed,
            speed=self.config.batch_speed,
            duration=self.config.batch_duration,
            stall=self.config.batch_stall,
            max_requests=self.config.max_batch_requests,
        )
        routes = [
            Route("/v1/messages", self._endpoint(self._messages), methods=["POST"]),
            Route("/v1/messages/count_tokens", self._endpoint(self._count_tokens), methods=["POST"]),
            Route("/v1/messages/batches", self._endpoint(self._create_batch), methods=["POST"]),
            Route("/v1/messages/batches", self._endpoint(self._list_batches), methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._endpoint(self._get_batch), methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", self._endpoint(self._delete_batch), methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/cancel", self._endpoint(self._cancel_batch), methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", self._endpoint(self._batch_results), methods=["GET"]),
            Route("/v1/models", self._endpoint(self._list_models), methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._endpoint(self._get_model), methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})
        self.replayer = self._replayer(self.config)

    @staticmethod
    def _replayer(config: EmulatorConfig) -> Replayer | None:
        if config.replay is None:
            return None
        cassette = config.replay if isinstance(config.replay, Cassette) else read_cassette(config.replay)
        return Replayer(cassette, speed=config.replay_speed, on_miss=config.on_miss, ignored=config.replay_ignore)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def inject(
        self,
        fault: str | Fault,
        *,
        path: str = "",
        model: str | None = None,
        attempt: int | None = None,
        probability: float = 1.0,
        limit: int | None = None,
    ) -> None:
        """Add a server-side fault rule (the scenario file's `[[rules]]`, from code); later rules match last."""
        parsed = parse_fault_header(fault) if isinstance(fault, str) else fault
        self.config.scenario.rules.append(Rule(parsed, path, model, attempt, probability, limit))

    # --- plumbing shared by every endpoint -------------------------------------------------------

    def _endpoint(
        self, handler: Callable[[Request, _Call], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            retry = request.headers.get("x-stainless-retry-count")
            api_key = _api_key(request)
            call = _Call(
                new_id("req_011C", 20),
                int(retry) if retry and retry.isdigit() else None,
                key_id(api_key) if api_key else None,
            )
            try:
                self._check_auth(api_key)
                replayed = await self._replayed(request, call) if self.replayer is not None else None
                response = replayed or await handler(request, call)
            except ApiError as err:
                response = self._error_response(err, call.request_id)
            except ConnectionResetFault:
                response = _Reset()
            response.headers["request-id"] = call.request_id
            response.headers["anthropic-organization-id"] = ORGANIZATION_ID
            self.access_log.add(
                method=request.method,
                path=request.scope["path"],
                status=response.status_code,
                request_id=call.request_id,
                retry_count=call.retry_count,
                fault=call.fault.describe() if call.fault else None,
                model=call.model,
                stream=call.stream,
                key_id=call.key_id,
            )
            return response

        return endpoint

    def _error_response(self, err: ApiError, request_id: str) -> Response:
        headers = {"content-type": JSON_TYPE, **err.headers}
        return Response(_dumps(err.body(request_id)), status_code=err.status, headers=headers)

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        """Unknown paths and methods get the API's error shape, not Starlette's plain text."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        request_id = new_id("req_011C", 20)
        err = ApiError(404 if status == 404 else status, "Not Found" if status == 404 else None)
        if status == 405:
            err = ApiError(
                405,
                f"Method {request.method} is not allowed for {request.scope['path']}",
                error_type="invalid_request_error",
                headers=dict(getattr(exc, "headers", None) or {}),  # `Allow: POST`
            )
        response = self._error_response(err, request_id)
        response.headers["request-id"] = request_id
        api_key = _api_key(request)
        self.access_log.add(
            method=request.method,
            path=request.scope["path"],
            status=response.status_code,
            request_id=request_id,
            retry_count=None,
            fault=None,
            model=None,
            stream=False,
            key_id=key_id(api_key) if api_key else None,
        )
        return response

    def _check_auth(self, api_key: str | None) -> None:
        """Any non-empty key with `api_key=None`; else the configured key, or one with limits of its own."""
        if not api_key:
            raise ApiError(401, "x-api-key header is required")
        if self.config.api_key is not None and api_key != self.config.api_key and api_key not in self.rate_limits.keys:
            raise ApiError(401, "invalid x-api-key")

    async def _read_json(self, request: Request, limit: int | None = None) -> Any:
        limit = limit or self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413)
        content_type = request.headers.get("content-type", JSON_TYPE).split(";")[0].strip().lower()
        if content_type not in (JSON_TYPE, "application/*+json", "text/json", ""):
            raise invalid(f"Unsupported Content-Type '{content_type}': the request body must be JSON")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413)
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            return from_json(body)
        except ValueError:
            pass  # jiter is fast; the stdlib's error text is the one the API reports
        try:
            return json.loads(body)
        except UnicodeDecodeError as err:
            raise invalid(f"The request body is not valid JSON: {err}") from None
        except json.JSONDecodeError as err:
            raise invalid(f"The request body is not valid JSON: {err}") from None

    async def _replayed(self, request: Request, call: _Call) -> Response | None:
        """The recorded answer to this request, with any fault layered on; None to generate it (a miss, with
        `on_miss="generate"`)."""
        assert self.replayer is not None
        raw = await request.body()
        try:
            body = from_json(raw) if raw else None
        except ValueError:
            body = None  # not JSON: no recorded request has that body; generating it gives the API's 400
        if isinstance(body, dict):
            call.model = body.get("model") if isinstance(body.get("model"), str) else None
            call.stream = body.get("stream") is True
        self._pick_fault(request, call, batch_create=request.method == "POST" and request.url.path.endswith("/batches"))
        call.fault_chosen = True
        method, path, query = request.method, request.url.path, request.url.query
        exchange = self.replayer.take(method, path, query, body)
        if exchange is None:
            if self.replayer.on_miss == "error":
                raise self.replayer.miss(method, path, query, body)
            return None
        call.request_id = exchange.headers.get("request-id", call.request_id)
        return await self.replayer.respond(exchange, call.fault, str(request.base_url))

    def _pick_fault(self, request: Request, call: _Call, *, batch_create: bool = False) -> None:
        if call.fault_chosen:
            return
        call.fault = self.config.scenario.choose(
            request.headers.get(FAULT_HEADER),
            request.scope["path"],
            call.model,
            call.retry_count or 0,
            batch_create=batch_create,
        )
        if call.fault is not None:
            call.fault.raise_before_answering()

    async def _request_body(self, request: Request, call: _Call) -> tuple[Any, str]:
        """Read and decode the body, note model and stream for the log, apply any fault; return body, version."""
        raw = await self._read_json(request)
        if isinstance(raw, dict):
            call.model = raw.get("model") if isinstance(raw.get("model"), str) else None
            call.stream = raw.get("stream") is True
        self._pick_fault(request, call)
        return raw, check_version(request.headers.get("anthropic-version"))

    # --- endpoints -------------------------------------------------------------------------------

    async def _messages(self, request: Request, call: _Call) -> Response:
        try:
            return await self._message(request, call)
        except ApiError as err:
            # an answer that took nothing from the buckets still shows them, once the model is known
            spec = load_catalog().resolve(call.model) if call.model else None
            if spec is not None and call.key_id is not None and "anthropic-ratelimit-requests-limit" not in err.headers:
                err.headers = {**self.limiter.headers(call.key_id, spec), **err.headers}
            raise

    async def _message(self, request: Request, call: _Call) -> Response:
        raw, version = await self._request_body(request, call)
        valid = validate(raw, version)
        call.stream = valid.body.get("stream") is True  # as validated: `"stream": "true"` streams too
        assert call.key_id is not None  # authenticated
        plan = self.prompt_cache.plan(call.key_id, valid)
        admission = self.limiter.admit(call.key_id, valid.model, plan.usage.rate_limited)
        self.prompt_cache.commit(plan)
        gen = generate(valid, self.config.seed, new_id)
        message_id = new_id("msg_01")
        if call.stream:
            events = sse_events(message_id, valid, gen, plan.usage)
            return StreamingResponse(
                self._paced(events, call.fault, admission, gen.output_tokens),
                media_type="text/event-stream; charset=utf-8",
                headers={**SSE_HEADERS, **admission.headers},
            )
        await self._delay(gen, call.fault)
        admission.settle(gen.output_tokens)
        body = message_json(message_id, valid, gen, plan.usage)
        return Response(_dumps(body), media_type=JSON_TYPE, headers=admission.headers)

    async def _count_tokens(self, request: Request, call: _Call) -> Response:
        raw, version = await self._request_body(request, call)
        valid = validate(raw, version, count_only=True)
        return Response(_dumps({"input_tokens": valid.input_tokens}), media_type=JSON_TYPE)

    async def _list_models(self, request: Request, call: _Call) -> Response:
        self._pick_fault(request, call)
        models = load_catalog().models
        params = request.query_params
        limit_raw = params.get("limit", "20")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
            raise invalid("limit: Input should be greater than or equal to 1 and less than or equal to 1000")
        limit = int(limit_raw)
        ids = [m.id for m in models]
        start, stop = 0, len(models)
        if "after_id" in params:
            start = self._position(ids, params["after_id"], "after_id") + 1
        if "before_id" in params:
            stop = self._position(ids, params["before_id"], "before_id")
            start = max(start, stop - limit) if "after_id" not in params else start
        page = models[start:stop][:limit]
        has_more = (start + len(page) < stop) if "before_id" not in params else start > 0
        return _page([_model_info(m) for m in page], has_more)

    @staticmethod
    def _position(ids: list[str], model_id: str, name: str) -> int:
        if model_id not in ids:
            raise invalid(f"{name}: unknown model id '{model_id}'")
        return ids.index(model_id)

    async def _get_model(self, request: Request, call: _Call) -> Response:
        self._pick_fault(request, call)
        spec = resolve_model(request.path_params["model_id"])
        return Response(_dumps(_model_info(spec)), media_type=JSON_TYPE)

    async def _openapi(self, request: Request) -> Response:
        """The emulator's own endpoints, described for tools (a fuzzer); no key needed, not in the access log."""
        return Response(_dumps(openapi_document()), media_type=JSON_TYPE)

    # --- message batches -------------------------------------------------------------------------

    def _batch_response(self, request: Request, batch: Batch) -> Response:
        body = batch.to_json(self.batches.now(), str(request.base_url))
        return Response(_dumps(body), media_type=JSON_TYPE)

    async def _batch_fault(self, request: Request, call: _Call, *, batch_create: bool = False) -> None:
        """Apply any fault (a status raises); its `ttft_ms` / `latency_ms` delay the whole answer."""
        self._pick_fault(request, call, batch_create=batch_create)
        if not batch_create:
            await self._fault_delay(call)

    @staticmethod
    async def _fault_delay(call: _Call) -> None:
        delay = (call.fault.ttft_ms or 0) + (call.fault.latency_ms or 0) if call.fault else 0
        if delay:
            await asyncio.sleep(delay / 1000)

    async def _create_batch(self, request: Request, call: _Call) -> Response:
        raw = await self._read_json(request, self.config.max_batch_bytes)
        await self._batch_fault(request, call, batch_create=True)
        version = check_version(request.headers.get("anthropic-version"))
        batch = await run_in_threadpool(self.batches.create, raw, version, call.fault)
        # a slow create answers late but has already created the batch: a client that dies waiting
        # has lost the response of a create that happened (what a batch runner must reconcile)
        await self._fault_delay(call)
        return self._batch_response(request, batch)

    async def _list_batches(self, request: Request, call: _Call) -> Response:
        await self._batch_fault(request, call)
        page, has_more = self.batches.page(request.query_params)
        now = self.batches.now()
        return _page([batch.to_json(now, str(request.base_url)) for batch in page], has_more)

    async def _get_batch(self, request: Request, call: _Call) -> Response:
        await self._batch_fault(request, call)
        return self._batch_response(request, self.batches.get(request.path_params["batch_id"]))

    async def _cancel_batch(self, request: Request, call: _Call) -> Response:
        await self._batch_fault(request, call)
        return self._batch_response(request, self.batches.cancel(request.path_params["batch_id"]))

    async def _delete_batch(self, request: Request, call: _Call) -> Response:
        await self._batch_fault(request, call)
        return Response(_dumps(self.batches.delete(request.path_params["batch_id"])), media_type=JSON_TYPE)

    async def _batch_results(self, request: Request, call: _Call) -> Response:
        await self._batch_fault(request, call)
        chunks = self.batches.results(request.path_params["batch_id"])
        return StreamingResponse(_yielding(chunks), media_type="application/x-jsonl")

    # --- pacing ----------------------------------------------------------------------------------

    def _rates(self, fault: Fault | None) -> tuple[float, float | None]:
        ttft = fault.ttft_ms if fault and fault.ttft_ms is not None else self.config.ttft_ms
        tps = fault.tps if fault and fault.tps is not None else self.config.tps
        latency = fault.latency_ms if fault and fault.latency_ms else 0.0
        return (ttft + latency) / 1000, tps

    async def _delay(self, gen: Generation, fault: Fault | None) -> None:
        ttft, tps = self._rates(fault)
        total = ttft + (gen.output_tokens / tps if tps else 0.0)
        if total > 0:
            await asyncio.sleep(total)

    async def _paced(
        self, events: Iterator[tuple[bytes, bool]], fault: Fault | None, admission: Admission, output_tokens: int
    ) -> AsyncIterator[bytes]:
        """Send the events at the configured pace; the output tokens are taken from the rate limits when the body
        ends, however it ends (complete, cut by a fault, or left by the client)."""
        try:
            async for chunk in paced(_unblocked(events), fault, *self._rates(fault)):
                yield chunk
        finally:
            admission.settle(output_tokens)


class _Reset(Response):
    """No answer: the connection is reset (a `connection_reset` fault). The access log shows status 0, and the
    request-id it notes was never sent."""

    def __init__(self) -> None:
        super().__init__(status_code=0)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await reset_connection(scope)


async def _unblocked(events: Iterator[tuple[bytes, bool]]) -> AsyncIterator[tuple[bytes, bool]]:
    """Events made on the fly, as an async iterator (what `paced` takes)."""
    for item in events:
        yield item


async def _yielding(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Send chunks made on the fly, letting other requests run between them."""
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)


def _api_key(request: Request) -> str | None:
    """The key a request sent: `x-api-key`, else `Authorization: Bearer`."""
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    return key


def _page(data: list[dict[str, Any]], has_more: bool) -> Response:
    """A list endpoint's page, as the API shapes it."""
    body = {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return Response(_dumps(body), media_type=JSON_TYPE)


def _model_info(spec: ModelSpec) -> dict[str, Any]:
    return {
        "type": "model",
        "id": spec.id,
        "display_name": spec.display_name,
        "created_at": spec.created_at,
        "max_input_tokens": spec.context_window,
        "max_tokens": spec.max_output_tokens,
        "capabilities": capabilities(spec),
        "lifecycle": "active",
    }


def create_app(config: EmulatorConfig | None = None) -> Emulator:
    return Emulator(config)
