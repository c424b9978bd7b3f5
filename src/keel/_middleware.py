"""The SDK middleware that records every HTTP attempt of a keel call.

It runs inside the SDK's retry loop, once per attempt, and sees every response, 4xx/5xx included: the call
in progress (`CURRENT_CALL`) writes an `AttemptRecord` for each, and steers the SDK's own retry decision with
the SDK's own mechanism (`x-should-retry`). Installed on keel's copy of the SDK client only; a pass-through
for calls made outside a keel call.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
from anthropic._middleware import AsyncCallNext, CallNext, Middleware
from anthropic._request import APIRequest
from anthropic._response import APIResponse, AsyncAPIResponse

from ._call import CURRENT_CALL


class AttemptMiddleware(Middleware):
    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        call = CURRENT_CALL.get()
        if call is None:
            return call_next(request)
        call.before_attempt()
        started = time.perf_counter()
        try:
            response = call_next(request)
        except anthropic.APIConnectionError as err:
            call.attempt_failed(request, err, started)
            raise
        http = response.http_response
        if 200 <= http.status_code < 300:
            call.attempt_succeeded(request, http, started)
        else:
            call.attempt_errored(request, http, http.read(), started)
        return response

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        call = CURRENT_CALL.get()
        if call is None:
            return await call_next(request)
        call.before_attempt()
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except anthropic.APIConnectionError as err:
            call.attempt_failed(request, err, started)
            raise
        http = response.http_response
        if 200 <= http.status_code < 300:
            call.attempt_succeeded(request, http, started)
        else:
            call.attempt_errored(request, http, await http.aread(), started)
        return response
