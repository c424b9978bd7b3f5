"""The error map, driven by real SDK exceptions raised against keel's emulator."""

from __future__ import annotations

import socket

import anthropic
import pytest
from anthropic.types import MessageParam

from keel._error_map import ERROR_TABLE, Action, ErrorClass, by_name, classify, classify_exception
from keel.emulator import Emulator

HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]
USAGE_LIMIT_MESSAGE = (
    "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."
)

# fault header, SDK exception class, row name, retryable, action
STATUS_CASES = [
    ("status=400", anthropic.BadRequestError, "invalid_request", False, Action.FIX_REQUEST),
    (
        f"status=400; message={USAGE_LIMIT_MESSAGE}",
        anthropic.BadRequestError,
        "usage_limit",
        False,
        Action.WAIT_FOR_SPEND_RESET,
    ),
    ("status=401", anthropic.AuthenticationError, "authentication", False, Action.FIX_CREDENTIALS),
    ("status=402", anthropic.PaymentRequiredError, "billing", False, Action.FIX_BILLING),
    ("status=403", anthropic.PermissionDeniedError, "permission", False, Action.FIX_PERMISSIONS),
    ("status=404", anthropic.NotFoundError, "not_found", False, Action.CHECK_MODEL_OR_RESOURCE),
    ("status=408", anthropic.RequestTimeoutError, "request_timeout", True, Action.BACK_OFF),
    ("status=409", anthropic.ConflictError, "conflict", True, Action.RESOLVE_CONFLICT_AND_RETRY),
    ("status=413", anthropic.ContentTooLargeError, "request_too_large", False, Action.SHRINK_REQUEST),
    ("status=429", anthropic.RateLimitError, "rate_limited", True, Action.WAIT_RETRY_AFTER),
    (
        "status=429; error_code=enforced_spend_limit_reached",
        anthropic.EnforcedSpendLimitReachedError,
        "spend_cap",
        False,
        Action.WAIT_FOR_SPEND_RESET,
    ),
    (
        "status=429; error_code=contract_spend_limit_reached",
        anthropic.ContractSpendLimitReachedError,
        "contract_spend_cap",
        False,
        Action.WAIT_FOR_SPEND_RESET,
    ),
    (
        "status=429; error_code=ramp_limit_exceeded",
        anthropic.RampLimitExceededError,
        "ramp_limit",
        True,
        Action.RAMP_UP_GRADUALLY,
    ),
    ("status=500", anthropic.InternalServerError, "server_error", True, Action.BACK_OFF),
    ("status=504", anthropic.GatewayTimeoutError, "gateway_timeout", True, Action.RETRY_OR_STREAM),
    ("status=529", anthropic.OverloadedError, "overloaded", True, Action.BACK_OFF),
    ("status=418", anthropic.APIStatusError, "unknown_4xx", False, Action.FIX_REQUEST),
    ("status=422", anthropic.UnprocessableEntityError, "unknown_4xx", False, Action.FIX_REQUEST),
    ("status=503", anthropic.ServiceUnavailableError, "unknown_5xx", True, Action.BACK_OFF),
    ("status=599", anthropic.InternalServerError, "unknown_5xx", True, Action.BACK_OFF),
]


def _raise_from(sdk: anthropic.Anthropic, fault: str) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk.with_options(max_retries=0).messages.create(
            model="claude-opus-5", max_tokens=64, messages=HELLO, extra_headers={"x-keel-fault": fault}
        )
    return caught.value


@pytest.mark.parametrize(
    ("fault", "exc_type", "name", "retryable", "action"), STATUS_CASES, ids=[c[0][:60] for c in STATUS_CASES]
)
def test_status_errors_from_the_emulator(
    keel_anthropic: anthropic.Anthropic,
    fault: str,
    exc_type: type[anthropic.APIStatusError],
    name: str,
    retryable: bool,
    action: Action,
) -> None:
    exc = _raise_from(keel_anthropic, fault)
    assert type(exc) is exc_type  # the SDK's own class for the status / error_code
    row = classify_exception(exc)
    assert (row.name, row.retryable, row.action) == (name, retryable, action)
    assert row in ERROR_TABLE
    # classify() on the exception's fields gives the same row
    assert classify(exc.status_code, exc.type, exc.error_code, exc.api_message) is row


@pytest.mark.parametrize(
    ("fault", "exc_type", "name", "retryable", "action"), STATUS_CASES, ids=[c[2] for c in STATUS_CASES]
)
def test_sdk_retries_field_matches_what_the_sdk_does(
    keel_anthropic: anthropic.Anthropic,
    keel_emulator: Emulator,
    fault: str,
    exc_type: type[anthropic.APIStatusError],
    name: str,
    retryable: bool,
    action: Action,
) -> None:
    """`sdk_retries` must describe the SDK's real default retry rule (spend caps: SDK retries, keel does not)."""
    with pytest.raises(exc_type):
        keel_anthropic.with_options(max_retries=1).messages.create(
            model="claude-opus-5",
            max_tokens=64,
            messages=HELLO,
            extra_headers={"x-keel-fault": f"{fault}; retry_after_ms=1"},
        )
    attempts = len(keel_emulator.access_log.entries())
    assert attempts == (2 if by_name(name).sdk_retries else 1)


def test_spend_caps_are_where_keel_and_the_sdk_disagree() -> None:
    disagree = {row.name for row in ERROR_TABLE if row.sdk_retries and not row.retryable}
    assert disagree == {"spend_cap", "contract_spend_cap"}


def test_real_validation_errors_classify_without_faults(keel_anthropic: anthropic.Anthropic) -> None:
    sdk = keel_anthropic.with_options(max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as not_found:
        sdk.messages.create(model="claude-nonexistent-9", max_tokens=64, messages=HELLO)
    assert classify_exception(not_found.value).name == "not_found"

    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="claude-opus-5", max_tokens=64, messages=HELLO, extra_body={"temperature": 0.5})
    assert classify_exception(bad.value).action is Action.FIX_REQUEST

    with pytest.raises(anthropic.AuthenticationError) as auth:
        sdk.with_options(api_key="wrong-key").messages.create(model="claude-opus-5", max_tokens=64, messages=HELLO)
    assert classify_exception(auth.value).name == "authentication"


@pytest.mark.parametrize("error_type", ["overloaded_error", "api_error"])
def test_mid_stream_error_is_retryable_resume(keel_anthropic: anthropic.Anthropic, error_type: str) -> None:
    sdk = keel_anthropic.with_options(max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(
            model="claude-opus-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "[[keel:words=20]] go"}],
            extra_headers={"x-keel-fault": f"stream_error_after=4; error_type={error_type}"},
        ) as stream,
    ):
        stream.get_final_message()
    exc = caught.value
    assert type(exc) is anthropic.APIStatusError
    assert exc.status_code == 200 and exc.type == error_type
    row = classify_exception(exc)
    assert (row.name, row.retryable, row.action) == ("mid_stream", True, Action.RESUME_STREAM)


def test_dropped_stream_raises_nothing_so_its_row_is_looked_up_by_name(keel_anthropic: anthropic.Anthropic) -> None:
    with keel_anthropic.with_options(max_retries=0).messages.stream(
        model="claude-opus-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "[[keel:words=20]] go"}],
        extra_headers={"x-keel-fault": "drop_after=5"},
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason is None
    row = by_name("stream_interrupted")
    assert (row.retryable, row.action) == (True, Action.RESUME_STREAM)


def test_ten_minute_guard_means_switch_to_streaming(keel_anthropic: anthropic.Anthropic) -> None:
    with pytest.raises(ValueError, match="Streaming is required") as caught:
        keel_anthropic.with_options(max_retries=0).messages.create(
            model="claude-haiku-5-5", max_tokens=100_000, messages=HELLO
        )
    row = classify_exception(caught.value)
    assert (row.name, row.retryable, row.action) == ("stream_required", False, Action.SWITCH_TO_STREAMING)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_connection_error() -> None:
    sdk = anthropic.Anthropic(api_key="k", base_url=f"http://127.0.0.1:{_closed_port()}", max_retries=0)
    with pytest.raises(anthropic.APIConnectionError) as caught:
        sdk.messages.create(model="claude-opus-5", max_tokens=64, messages=HELLO)
    sdk.close()
    assert not isinstance(caught.value, anthropic.APITimeoutError)
    row = classify_exception(caught.value)
    assert (row.name, row.retryable, row.action) == ("connection", True, Action.BACK_OFF)


def test_client_timeout(keel_loopback_url: str) -> None:
    sdk = anthropic.Anthropic(api_key="keel-emulator-key", base_url=keel_loopback_url, max_retries=0, timeout=0.2)
    with pytest.raises(anthropic.APITimeoutError) as caught:
        sdk.messages.create(
            model="claude-opus-5", max_tokens=64, messages=HELLO, extra_headers={"x-keel-fault": "ttft_ms=1500"}
        )
    sdk.close()
    row = classify_exception(caught.value)
    assert (row.name, row.retryable, row.action) == ("timeout", True, Action.RETRY_OR_STREAM)


def test_anything_else_is_unexpected_but_wrapped_sdk_errors_are_found(keel_anthropic: anthropic.Anthropic) -> None:
    assert classify_exception(RuntimeError("boom")).name == "unexpected"
    assert classify_exception(ValueError("some other value error")).name == "unexpected"
    assert not classify_exception(KeyError("x")).retryable

    overloaded = _raise_from(keel_anthropic, "status=529")
    try:
        raise RuntimeError("my wrapper") from overloaded
    except RuntimeError as wrapper:
        assert classify_exception(wrapper).name == "overloaded"


def test_classify_degrades_sensibly() -> None:
    # an unknown error_code is treated as the bare type; a known code on another status is ignored
    assert classify(429, "rate_limit_error", "some_future_code").name == "rate_limited"
    assert classify(500, "api_error", "enforced_spend_limit_reached").name == "server_error"
    # status decides over type; the 413 from the edge may have no API JSON at all
    assert classify(413).name == "request_too_large"
    assert classify(400, "invalid_request_error", message=USAGE_LIMIT_MESSAGE).name == "usage_limit"
    assert classify(400, "invalid_request_error", message="messages: Field required").name == "invalid_request"
    assert classify(200, "overloaded_error").name == "mid_stream"
    assert classify(451).name == "unknown_4xx"
    assert classify(600).name == "unknown_5xx"
    # no status: errored batch results carry only error.type (and maybe a code)
    assert classify(None, "overloaded_error").name == "overloaded"
    assert classify(None, "invalid_request_error").name == "invalid_request"
    assert classify(None, "rate_limit_error", "enforced_spend_limit_reached").name == "spend_cap"
    assert classify(None, "brand_new_error").name == "unexpected"
    assert classify(None).name == "connection"


def test_never_retried_statuses() -> None:
    for status in (400, 401, 402, 403, 404, 413):
        assert not classify(status).retryable, status
    for code in ("enforced_spend_limit_reached", "contract_spend_limit_reached"):
        assert not classify(429, "rate_limit_error", code).retryable
    for status in (408, 409, 429, 500, 502, 504, 529):
        assert classify(status).retryable, status


def test_table_shape() -> None:
    names = [row.name for row in ERROR_TABLE]
    assert len(names) == len(set(names))
    statuses = [row.status for row in ERROR_TABLE if row.status is not None and row.status >= 400]
    assert statuses == sorted(statuses)  # the API docs' order
    assert statuses[0] == 400 and statuses[-1] == 529
    for row in ERROR_TABLE:
        assert isinstance(row, ErrorClass) and row.note and "\n" not in row.note
        assert by_name(row.name) is row
    with pytest.raises(KeyError, match="no error class named"):
        by_name("nope")


def test_label_reads_well_in_a_log_line() -> None:
    assert str(classify(529)) == "overloaded (529 overloaded_error): retryable, back_off"
    assert classify(429, "rate_limit_error", "enforced_spend_limit_reached").label() == (
        "spend_cap (429 rate_limit_error enforced_spend_limit_reached): not retryable, wait_for_spend_reset"
    )
    assert str(by_name("connection")) == "connection (no status): retryable, back_off"
