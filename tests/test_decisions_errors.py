"""The error map by value: every row of `keel.ERROR_TABLE`, the type-only path of errored batch results, and
`classify_exception` on a `__cause__` chain that loops.

Expected values come from the API's error table (status and `error.type` of each error), keel's documented
policy (README "Errors and retries": 400, 401, 402, 403, 404, 413, and the spend-cap 429 never retried; 408,
409, 429, 5xx and 529 retried) and the SDK's own retry rule (408, 409, 429, 5xx and connection errors).
"""

from __future__ import annotations

import threading

import anthropic
import httpx2
import pytest

import keel
from keel import Action
from keel._error_map import by_name

USAGE_LIMIT_MESSAGE = "You have reached your specified API usage limits. You will regain access on 2026-12-01."

# name: (status, error.type, error_code, keel retries it, action, the SDK retries it)
ROWS: dict[str, tuple[int | None, str | None, str | None, bool, Action, bool]] = {
    "invalid_request": (400, "invalid_request_error", None, False, Action.FIX_REQUEST, False),
    "usage_limit": (400, "invalid_request_error", None, False, Action.WAIT_FOR_SPEND_RESET, False),
    "authentication": (401, "authentication_error", None, False, Action.FIX_CREDENTIALS, False),
    "billing": (402, "billing_error", None, False, Action.FIX_BILLING, False),
    "permission": (403, "permission_error", None, False, Action.FIX_PERMISSIONS, False),
    "not_found": (404, "not_found_error", None, False, Action.CHECK_MODEL_OR_RESOURCE, False),
    "request_timeout": (408, None, None, True, Action.BACK_OFF, True),
    "conflict": (409, "conflict_error", None, True, Action.RESOLVE_CONFLICT_AND_RETRY, True),
    "request_too_large": (413, "request_too_large", None, False, Action.SHRINK_REQUEST, False),
    "rate_limited": (429, "rate_limit_error", None, True, Action.WAIT_RETRY_AFTER, True),
    "spend_cap": (429, "rate_limit_error", "enforced_spend_limit_reached", False, Action.WAIT_FOR_SPEND_RESET, True),
    "contract_spend_cap": (
        429,
        "rate_limit_error",
        "contract_spend_limit_reached",
        False,
        Action.WAIT_FOR_SPEND_RESET,
        True,
    ),
    "ramp_limit": (429, "rate_limit_error", "ramp_limit_exceeded", True, Action.RAMP_UP_GRADUALLY, True),
    "server_error": (500, "api_error", None, True, Action.BACK_OFF, True),
    "gateway_timeout": (504, "timeout_error", None, True, Action.RETRY_OR_STREAM, True),
    "overloaded": (529, "overloaded_error", None, True, Action.BACK_OFF, True),
    "mid_stream": (200, None, None, True, Action.RESUME_STREAM, False),  # the SDK does not retry a 200 stream
    "stream_interrupted": (None, None, None, True, Action.RESUME_STREAM, False),
    "connection": (None, None, None, True, Action.BACK_OFF, True),
    "timeout": (None, None, None, True, Action.RETRY_OR_STREAM, True),
    "stream_required": (None, None, None, False, Action.SWITCH_TO_STREAMING, False),
    # keel's own rate limiter (docs/ratelimit.md): nothing was sent
    "pacing_timeout": (None, None, None, True, Action.WAIT_RETRY_AFTER, False),
    "over_rate_limit": (None, None, None, False, Action.SHRINK_REQUEST, False),
    "limiter_unavailable": (None, None, None, False, Action.CHECK_LIMITER_STORE, False),
    "unknown_4xx": (None, None, None, False, Action.FIX_REQUEST, False),
    "unknown_5xx": (None, None, None, True, Action.BACK_OFF, True),
    "unexpected": (None, None, None, False, Action.NONE, False),
}

# error.type alone, as an errored Message Batches result carries it: the row it must select
BY_TYPE_ONLY = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "billing",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "conflict_error": "conflict",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limited",
    "api_error": "server_error",
    "timeout_error": "gateway_timeout",
    "overloaded_error": "overloaded",
}


def test_the_table_has_exactly_the_documented_rows_in_order() -> None:
    assert [row.name for row in keel.ERROR_TABLE] == list(ROWS)


@pytest.mark.parametrize("name", list(ROWS))
def test_each_row_matches_and_decides_as_documented(name: str) -> None:
    row = by_name(name)
    assert row.name == name
    assert (row.status, row.error_type, row.error_code, row.retryable, row.action, row.sdk_retries) == ROWS[name]
    assert row.note  # `keel explain` prints it


def test_an_action_is_written_in_records_and_explain_as_its_name_in_lower_case() -> None:
    assert all(action.value == action.name.lower() for action in Action)


def test_only_the_usage_limit_row_is_matched_by_its_message() -> None:
    matched = {row.name: row.message_contains for row in keel.ERROR_TABLE if row.message_contains is not None}
    assert matched == {"usage_limit": "reached your specified api usage limits"}


@pytest.mark.parametrize(("error_type", "name"), list(BY_TYPE_ONLY.items()))
def test_an_errored_batch_result_is_classified_by_its_type_alone(error_type: str, name: str) -> None:
    assert keel.classify(None, error_type).name == name


@pytest.mark.parametrize(
    ("status", "name"),
    [(400, "invalid_request"), (401, "authentication"), (402, "billing"), (403, "permission"), (404, "not_found"),
     (408, "request_timeout"), (409, "conflict"), (413, "request_too_large"), (429, "rate_limited"),
     (500, "server_error"), (504, "gateway_timeout"), (529, "overloaded"), (200, "mid_stream")],
)  # fmt: skip
def test_a_listed_status_selects_its_row_whatever_the_type(status: int, name: str) -> None:
    assert keel.classify(status).name == name
    assert keel.classify(status, "some_future_error_type").name == name


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413])
def test_client_errors_are_never_retried(status: int) -> None:
    assert not keel.classify(status).retryable


@pytest.mark.parametrize("code", ["enforced_spend_limit_reached", "contract_spend_limit_reached"])
def test_the_spend_cap_429s_are_never_retried_though_the_sdk_would(code: str) -> None:
    row = keel.classify(429, "rate_limit_error", code)
    assert row.error_code == code and not row.retryable and row.sdk_retries
    assert keel.classify(None, "rate_limit_error", code) is row  # an errored batch result with the code


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_errors_are_retried(status: int) -> None:
    assert keel.classify(status).retryable


@pytest.mark.parametrize(
    ("status", "name"),
    [(100, "mid_stream"), (399, "mid_stream"), (405, "unknown_4xx"), (499, "unknown_4xx"), (501, "unknown_5xx"),
     (599, "unknown_5xx"), (600, "unknown_5xx")],
)  # fmt: skip
def test_unlisted_statuses_fall_into_their_range(status: int, name: str) -> None:
    assert keel.classify(status).name == name


def test_a_known_error_code_on_another_status_is_ignored_and_an_unknown_code_is_the_bare_type() -> None:
    assert keel.classify(529, "overloaded_error", "enforced_spend_limit_reached").name == "overloaded"
    assert keel.classify(429, "rate_limit_error", "ramp_limit_exceeded").name == "ramp_limit"
    assert keel.classify(429, "rate_limit_error", "a_future_code").name == "rate_limited"
    assert keel.classify(None, "overloaded_error", "a_future_code").name == "overloaded"


def test_the_usage_limit_message_is_recognised_in_any_case_on_a_400_or_without_status() -> None:
    assert keel.classify(400, "invalid_request_error", message=USAGE_LIMIT_MESSAGE).name == "usage_limit"
    assert keel.classify(400, "invalid_request_error", message=USAGE_LIMIT_MESSAGE.upper()).name == "usage_limit"
    assert keel.classify(None, "invalid_request_error", message=USAGE_LIMIT_MESSAGE).name == "usage_limit"
    assert keel.classify(403, "permission_error", message=USAGE_LIMIT_MESSAGE).name == "permission"


def test_no_status_and_no_type_means_no_response_and_an_unknown_type_is_unexpected() -> None:
    assert keel.classify(None).name == "connection"
    assert keel.classify(None, "brand_new_error").name == "unexpected"


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as caught:
        by_name("overload")
    assert "no error class named 'overload'" in str(caught.value)
    assert "(known: " + ", ".join(row.name for row in keel.ERROR_TABLE) + ")" in str(caught.value)


def _status_error(status: int) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "https://api.example.invalid/v1/messages")
    response = httpx2.Response(status, request=request)
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return anthropic.APIStatusError("Overloaded", response=response, body=body)


def _classify_within(exc: BaseException, seconds: float = 5.0) -> keel.ErrorClass | None:
    """`classify_exception(exc)`, or None if it has not returned within `seconds` (a loop that never ends)."""
    found: list[keel.ErrorClass] = []
    worker = threading.Thread(target=lambda: found.append(keel.classify_exception(exc)), daemon=True)
    worker.start()
    worker.join(seconds)
    return found[0] if found else None


def test_a_cause_chain_that_loops_ends_as_unexpected() -> None:
    first, second = RuntimeError("first"), RuntimeError("second")
    first.__cause__, second.__cause__ = second, first
    assert _classify_within(first) is by_name("unexpected")
    itself = RuntimeError("its own cause")
    itself.__cause__ = itself
    assert _classify_within(itself) is by_name("unexpected")


def test_an_api_error_behind_a_looping_chain_is_still_found() -> None:
    wrapper, middle = RuntimeError("wrapper"), RuntimeError("middle")
    wrapper.__cause__, middle.__cause__ = middle, _status_error(529)
    assert _classify_within(wrapper) is by_name("overloaded")
    looped = RuntimeError("looped")
    looped.__cause__ = wrapper
    middle.__cause__ = looped  # wrapper -> middle -> looped -> wrapper, with no API error anywhere
    assert _classify_within(wrapper) is by_name("unexpected")
