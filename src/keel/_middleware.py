"""The SDK middleware that records every HTTP attempt of a keel call.

It runs inside the SDK's retry loop, once per attempt, and sees every response, 4xx/5xx included: the call
in progress (`CURRENT_CALL`) writes an `AttemptRecord` for each, and steers the SDK's own retry decision with
the SDK's own mechanism (`x-should-retry`). It runs inside the SDK's span of the API call, which keel's
telemetry annotates (`keel._telemetry`). Installed on keel's copy of the SDK client only; a pass-through
for calls made outside a keel call.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
from anthropic._constants import RAW_RESPONSE_HEADER
from anthropic._middleware import AsyncCallNext, CallNext, Middleware
from anthropic._request import APIRequest
from anthropic._response import APIResponse, AsyncAPIResponse
from anthropic.types import Message

from ._call import CURRENT_CALL


def _prices_here(request: APIRequest) -> bool:
    """Whether the middleware prices this 2xx for the SDK's span (`Call.response_priced`): a whole Message body,
    which the SDK parses next anyway (it keeps what was parsed here), not a stream nor a body the caller reads."""
    return request.cast_to is Message and not request.stream and request.headers.get(RAW_RESPONSE_HEADER) != "stream"


class AttemptMiddleware(Middleware):
    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        call = CURRENT_CALL.get()
        if call is None:
            return call_next(request)
        call.before_attempt()
        pacing = call.pacing
        if pacing is not None:
            pacing.acquire(request, call.deadline.at if call.deadline is not None else None)
        started = time.perf_counter()
        try:
            response = call_next(request)
        except anthropic.APIConnectionError as err:
            call.attempt_failed(request, err, started)
            if pacing is not None:
                pacing.refused(None, 0)
            raise
        http = response.http_response
        if 200 <= http.status_code < 300:
            call.attempt_succeeded(request, http, started)
            if call.span is not None and _prices_here(request):
                call.response_priced(response.parse())
            if pacing is not None:
                pacing.served(http.headers)
        else:
            call.attempt_errored(request, http, http.read(), started)
            if pacing is not None:
                pacing.refused(http.headers, http.status_code)
        return response

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        call = CURRENT_CALL.get()
        if call is None:
            return await call_next(request)
        call.before_attempt()
        pacing = call.pacing
        if pacing is not None:
            await pacing.acquire_async(request, call.deadline.at if call.deadline is not None else None)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except anthropic.APIConnectionError as err:
            call.attempt_failed(request, err, started)
            if pacing is not None:
                await pacing.refused_async(None, 0)
            raise
        http = response.http_response
        if 200 <= http.status_code < 300:
            call.attempt_succeeded(request, http, started)
            if call.span is not None and _prices_here(request):
                call.response_priced(await response.parse())
            if pacing is not None:
                pacing.served(http.headers)
        else:
            call.attempt_errored(request, http, await http.aread(), started)
            if pacing is not None:
                await pacing.refused_async(http.headers, http.status_code)
        return response
