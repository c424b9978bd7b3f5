"""The error map: one table from what the API (or the SDK) raised to what to do about it.

Everything in keel that decides whether to retry, and `keel explain`, reads `ERROR_TABLE` through
`classify` / `classify_exception`, so the policy lives in exactly one place.

The table deliberately differs from the SDK's built-in retry rule in one place: the SDK retries every 429,
including the spend-cap 429s (`enforced_spend_limit_reached`, `contract_spend_limit_reached`), which keep
failing until the cap resets on the 1st of next month. Here they are not retryable (`sdk_retries` records
what the SDK would do, so the difference is visible). It also treats an error event inside a 200 stream as
retryable, which the SDK does not retry on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import anthropic

__all__ = [
    "AUTHENTICATION",
    "BILLING",
    "CONFLICT",
    "CONNECTION",
    "CONTRACT_SPEND_CAP",
    "ERROR_TABLE",
    "GATEWAY_TIMEOUT",
    "INVALID_REQUEST",
    "LIMITER_UNAVAILABLE",
    "MID_STREAM",
    "NOT_FOUND",
    "OVERLOADED",
    "OVER_RATE_LIMIT",
    "PACING_TIMEOUT",
    "PERMISSION",
    "RAMP_LIMIT",
    "RATE_LIMITED",
    "REQUEST_TIMEOUT",
    "REQUEST_TOO_LARGE",
    "SERVER_ERROR",
    "SPEND_CAP",
    "STREAM_INTERRUPTED",
    "STREAM_REQUIRED",
    "TIMEOUT",
    "UNEXPECTED",
    "UNKNOWN_4XX",
    "UNKNOWN_5XX",
    "USAGE_LIMIT",
    "Action",
    "ErrorClass",
    "by_name",
    "classify",
    "classify_exception",
]


class Action(StrEnum):
    """What the caller should do about an error."""

    FIX_REQUEST = "fix_request"
    FIX_CREDENTIALS = "fix_credentials"
    FIX_PERMISSIONS = "fix_permissions"
    FIX_BILLING = "fix_billing"
    CHECK_MODEL_OR_RESOURCE = "check_model_or_resource"
    SHRINK_REQUEST = "shrink_request"
    RESOLVE_CONFLICT_AND_RETRY = "resolve_conflict_and_retry"
    WAIT_RETRY_AFTER = "wait_retry_after"
    WAIT_FOR_SPEND_RESET = "wait_for_spend_reset"
    RAMP_UP_GRADUALLY = "ramp_up_gradually"
    BACK_OFF = "back_off"
    RETRY_OR_STREAM = "retry_or_stream"
    SWITCH_TO_STREAMING = "switch_to_streaming"
    RESUME_STREAM = "resume_stream"
    CHECK_LIMITER_STORE = "check_limiter_store"
    NONE = "none"


@dataclass(frozen=True)
class ErrorClass:
    """One row of the error map.

    Attributes:
        status: the HTTP status the row matches (None: not part of the match, or no HTTP status at all).
        error_type: the error body's `error.type` it matches (None: not part of the match).
        error_code: the `error.details.error_code` it matches (None: not part of the match).
        retryable: keel's policy: whether retrying the same request can succeed.
        action: what the caller should do about it.
        note: a one-line handling note, as `keel explain` prints it.
        name: the row's stable name (e.g. "overloaded"), written in records.
        sdk_retries: what the SDK's own retry loop does with it by default.
        message_contains: set only on rows recognised by their message.
    """

    status: int | None
    error_type: str | None
    error_code: str | None
    retryable: bool
    action: Action
    note: str
    name: str
    sdk_retries: bool = False
    message_contains: str | None = None

    def label(self) -> str:
        """A compact, log-friendly description, e.g. `overloaded (529 overloaded_error): retryable, back_off`."""
        parts = [str(self.status) if self.status is not None else "no status"]
        if self.error_type:
            parts.append(self.error_type)
        if self.error_code:
            parts.append(self.error_code)
        verdict = "retryable" if self.retryable else "not retryable"
        return f"{self.name} ({' '.join(parts)}): {verdict}, {self.action.value}"

    def __str__(self) -> str:
        return self.label()


_USAGE_LIMIT_PHRASE = "reached your specified api usage limits"

INVALID_REQUEST = ErrorClass(
    400,
    "invalid_request_error",
    None,
    False,
    Action.FIX_REQUEST,
    "The request is malformed or not supported by this model; fix it, never retry it unchanged.",
    "invalid_request",
)
USAGE_LIMIT = ErrorClass(
    400,
    "invalid_request_error",
    None,
    False,
    Action.WAIT_FOR_SPEND_RESET,
    "A spend limit you set in the Console was reached: raise it, or wait for the date in the message.",
    "usage_limit",
    message_contains=_USAGE_LIMIT_PHRASE,
)
AUTHENTICATION = ErrorClass(
    401,
    "authentication_error",
    None,
    False,
    Action.FIX_CREDENTIALS,
    "The API key is missing, wrong or revoked; fix the key, never retry.",
    "authentication",
)
BILLING = ErrorClass(
    402,
    "billing_error",
    None,
    False,
    Action.FIX_BILLING,
    "Billing problem (e.g. credit balance too low); fix billing, never retry.",
    "billing",
)
PERMISSION = ErrorClass(
    403,
    "permission_error",
    None,
    False,
    Action.FIX_PERMISSIONS,
    "The key may not use this model or resource; fix permissions, never retry.",
    "permission",
)
NOT_FOUND = ErrorClass(
    404,
    "not_found_error",
    None,
    False,
    Action.CHECK_MODEL_OR_RESOURCE,
    "Wrong model id, path or resource id; check it, never retry.",
    "not_found",
)
REQUEST_TIMEOUT = ErrorClass(
    408,
    None,
    None,
    True,
    Action.BACK_OFF,
    "Request timeout (not in the API's error table; the SDK retries it): retry with backoff.",
    "request_timeout",
    sdk_retries=True,
)
CONFLICT = ErrorClass(
    409,
    "conflict_error",
    None,
    True,
    Action.RESOLVE_CONFLICT_AND_RETRY,
    "The request conflicts with the resource's current state; resolve it, then retry.",
    "conflict",
    sdk_retries=True,
)
REQUEST_TOO_LARGE = ErrorClass(
    413,
    "request_too_large",
    None,
    False,
    Action.SHRINK_REQUEST,
    "Body over the size limit (32 MB Messages, 256 MB Batches); shrink it or use batches/files.",
    "request_too_large",
)
RATE_LIMITED = ErrorClass(
    429,
    "rate_limit_error",
    None,
    True,
    Action.WAIT_RETRY_AFTER,
    "Rate limit hit; wait the retry-after header's time, then retry.",
    "rate_limited",
    sdk_retries=True,
)
SPEND_CAP = ErrorClass(
    429,
    "rate_limit_error",
    "enforced_spend_limit_reached",
    False,
    Action.WAIT_FOR_SPEND_RESET,
    "Tier monthly spend cap reached: no retry-after, retries fail until the 1st of next month 00:00 UTC.",
    "spend_cap",
    sdk_retries=True,
)
CONTRACT_SPEND_CAP = ErrorClass(
    429,
    "rate_limit_error",
    "contract_spend_limit_reached",
    False,
    Action.WAIT_FOR_SPEND_RESET,
    "Contract spend limit reached: no retry-after, retrying will not help until the limit resets or is raised.",
    "contract_spend_cap",
    sdk_retries=True,
)
RAMP_LIMIT = ErrorClass(
    429,
    "rate_limit_error",
    "ramp_limit_exceeded",
    True,
    Action.RAMP_UP_GRADUALLY,
    "Traffic grew too fast (acceleration limit); wait retry-after and ramp up gradually.",
    "ramp_limit",
    sdk_retries=True,
)
SERVER_ERROR = ErrorClass(
    500,
    "api_error",
    None,
    True,
    Action.BACK_OFF,
    "Internal API error; retry with exponential backoff.",
    "server_error",
    sdk_retries=True,
)
GATEWAY_TIMEOUT = ErrorClass(
    504,
    "timeout_error",
    None,
    True,
    Action.RETRY_OR_STREAM,
    "The API timed out processing the request; retry, and prefer streaming for long requests.",
    "gateway_timeout",
    sdk_retries=True,
)
OVERLOADED = ErrorClass(
    529,
    "overloaded_error",
    None,
    True,
    Action.BACK_OFF,
    "The API is overloaded across all users; retry with backoff and jitter.",
    "overloaded",
    sdk_retries=True,
)
MID_STREAM = ErrorClass(
    200,
    None,
    None,
    True,
    Action.RESUME_STREAM,
    "An error event arrived inside a 200 stream (the SDK does not retry it); resume from the partial output.",
    "mid_stream",
)
STREAM_INTERRUPTED = ErrorClass(
    None,
    None,
    None,
    True,
    Action.RESUME_STREAM,
    "The stream ended before message_stop (stop_reason None, nothing raised); resume from the partial output.",
    "stream_interrupted",
)
CONNECTION = ErrorClass(
    None,
    None,
    None,
    True,
    Action.BACK_OFF,
    "No HTTP response (connection refused, reset or DNS failure); retry with backoff.",
    "connection",
    sdk_retries=True,
)
TIMEOUT = ErrorClass(
    None,
    None,
    None,
    True,
    Action.RETRY_OR_STREAM,
    "The client timed out waiting for a response; retry, and stream long requests.",
    "timeout",
    sdk_retries=True,
)
STREAM_REQUIRED = ErrorClass(
    None,
    None,
    None,
    False,
    Action.SWITCH_TO_STREAMING,
    "The SDK refused a non-streaming call that may exceed 10 minutes; stream it, or lower max_tokens.",
    "stream_required",
)
PACING_TIMEOUT = ErrorClass(
    None,
    None,
    None,
    True,
    Action.WAIT_RETRY_AFTER,
    "keel's rate limiter found no room for the request within the call's deadline; nothing was sent. Retry "
    "later, or run the work under the background policy.",
    "pacing_timeout",
)
OVER_RATE_LIMIT = ErrorClass(
    None,
    None,
    None,
    False,
    Action.SHRINK_REQUEST,
    "The request alone needs more than a whole bucket of the rate limit (its input, or its max_tokens); it could "
    "never be sent. Shrink it or lower max_tokens.",
    "over_rate_limit",
)
LIMITER_UNAVAILABLE = ErrorClass(
    None,
    None,
    None,
    False,
    Action.CHECK_LIMITER_STORE,
    "The rate limiter's shared store (Redis) cannot be reached; keel fails closed and sends nothing unpaced. "
    "Bring the store back, or check KEEL_REDIS_URL.",
    "limiter_unavailable",
)
UNKNOWN_4XX = ErrorClass(
    None,
    None,
    None,
    False,
    Action.FIX_REQUEST,
    "An unlisted 4xx status: treat it as a client error and fix the request.",
    "unknown_4xx",
)
UNKNOWN_5XX = ErrorClass(
    None,
    None,
    None,
    True,
    Action.BACK_OFF,
    "An unlisted 5xx status: treat it as a server error and retry with backoff.",
    "unknown_5xx",
    sdk_retries=True,
)
UNEXPECTED = ErrorClass(
    None,
    None,
    None,
    False,
    Action.NONE,
    "Not an API error keel knows; let it propagate.",
    "unexpected",
)

ERROR_TABLE: tuple[ErrorClass, ...] = (
    INVALID_REQUEST,
    USAGE_LIMIT,
    AUTHENTICATION,
    BILLING,
    PERMISSION,
    NOT_FOUND,
    REQUEST_TIMEOUT,
    CONFLICT,
    REQUEST_TOO_LARGE,
    RATE_LIMITED,
    SPEND_CAP,
    CONTRACT_SPEND_CAP,
    RAMP_LIMIT,
    SERVER_ERROR,
    GATEWAY_TIMEOUT,
    OVERLOADED,
    MID_STREAM,
    STREAM_INTERRUPTED,
    CONNECTION,
    TIMEOUT,
    STREAM_REQUIRED,
    PACING_TIMEOUT,
    OVER_RATE_LIMIT,
    LIMITER_UNAVAILABLE,
    UNKNOWN_4XX,
    UNKNOWN_5XX,
    UNEXPECTED,
)
"""Every row of the map: the API's error table in the docs' order, then the errors without a status."""

_BY_NAME = {row.name: row for row in ERROR_TABLE}
_BY_STATUS = {row.status: row for row in ERROR_TABLE if row.status is not None and row.error_code is None}
_BY_STATUS[400] = INVALID_REQUEST  # the plain row, not the message-matched one after it
_BY_CODE = {row.error_code: row for row in ERROR_TABLE if row.error_code is not None}
_BY_TYPE = {
    row.error_type: row
    for row in reversed(ERROR_TABLE)  # reversed, so the first row of each type wins
    if row.error_type is not None and row.error_code is None and row.message_contains is None
}

_STREAM_REQUIRED_PREFIX = "Streaming is required for operations that may take longer than 10 minutes"


def by_name(name: str) -> ErrorClass:
    """The row with this stable name (e.g. for `keel explain overloaded`); KeyError if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no error class named {name!r} (known: {', '.join(_BY_NAME)})") from None


def classify(
    status: int | None,
    error_type: str | None = None,
    error_code: str | None = None,
    message: str | None = None,
) -> ErrorClass:
    """The row for an error, most specific match first.

    - A known `error_code` (`error.details.error_code`) on its own status wins; an unknown code is
      ignored, as the SDK docs say to treat it as the bare type.
    - A 400 whose message says "You have reached your specified API usage limits" is `usage_limit`.
    - Otherwise the status decides (the type only describes it): a listed status gives its row; any
      status below 400 means the error arrived inside a successful stream (`mid_stream`); other 4xx
      are `unknown_4xx` (not retryable) and 5xx or above are `unknown_5xx` (retryable).
    - With no status (e.g. an errored batch result, which carries only `error.type`) the type decides;
      an unknown type is `unexpected`, and no status, type or code at all means no response
      arrived (`connection`).
    """
    if error_code is not None:
        row = _BY_CODE.get(error_code)
        if row is not None and status in (None, row.status):
            return row
    if message is not None and status in (None, 400) and _USAGE_LIMIT_PHRASE in message.lower():
        return USAGE_LIMIT
    if status is None:
        if error_type is None:
            return CONNECTION
        return _BY_TYPE.get(error_type, UNEXPECTED)
    row = _BY_STATUS.get(status)
    if row is not None:
        return row
    if status < 400:
        return MID_STREAM
    if status < 500:
        return UNKNOWN_4XX
    return UNKNOWN_5XX


def _classify_one(exc: BaseException) -> ErrorClass:
    if isinstance(exc, anthropic.APIStatusError):
        return classify(exc.status_code, exc.type, exc.error_code, exc.api_message)
    if isinstance(exc, anthropic.APITimeoutError):  # before APIConnectionError: it is a subclass
        return TIMEOUT
    if isinstance(exc, anthropic.APIConnectionError):
        return CONNECTION
    if isinstance(exc, ValueError) and str(exc).startswith(_STREAM_REQUIRED_PREFIX):
        return STREAM_REQUIRED
    return UNEXPECTED


def classify_exception(exc: BaseException) -> ErrorClass:
    """The row for an exception raised by the SDK.

    Walks the `__cause__` chain (as the SDK's own retry check does), so an SDK error re-raised as
    `raise MyError(...) from err` is still recognised. Anything else is `unexpected`.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        row = _classify_one(current)
        if row is not UNEXPECTED:
            return row
        current = current.__cause__
    return UNEXPECTED
