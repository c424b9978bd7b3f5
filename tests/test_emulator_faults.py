"""Fault injection seen through the official SDK: typed errors, its own retries, mid-stream failures."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from keel.emulator import Emulator, EmulatorConfig, FaultSpecError, Scenario, client, load_scenario

MODEL = "claude-haiku-5-5"
HELLO: list[Any] = [{"role": "user", "content": "Hello"}]


def fault(spec: str) -> dict[str, str]:
    return {"x-keel-fault": spec}


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (402, anthropic.PaymentRequiredError, "billing_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (409, anthropic.ConflictError, "conflict_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (504, anthropic.GatewayTimeoutError, "timeout_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_every_error_status_gives_the_sdk_class_type_and_request_id(
    sdk: anthropic.Anthropic, keel_emulator: Emulator, status: int, error_class: type[Exception], error_type: str
) -> None:
    with pytest.raises(error_class) as caught:
        sdk.with_options(max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault(f"status={status}")
        )
    err = caught.value
    assert isinstance(err, anthropic.APIStatusError)
    assert err.status_code == status and err.type == error_type
    served = keel_emulator.access_log.entries()[-1]
    assert err.request_id == served.request_id and served.status == status
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id
    assert served.fault == f"status={status}"


def test_spend_cap_429_has_error_code_and_no_retry_after(keel_anthropic: anthropic.Anthropic) -> None:
    raw = keel_anthropic.with_options(max_retries=0).messages.with_raw_response
    with pytest.raises(anthropic.RateLimitError) as caught:
        raw.create(
            model=MODEL,
            max_tokens=10,
            messages=HELLO,
            extra_headers=fault("status=429; error_code=enforced_spend_limit_reached"),
        )
    err = caught.value
    assert type(err).__name__ == "EnforcedSpendLimitReachedError"
    assert err.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in err.response.headers and "retry-after-ms" not in err.response.headers


def test_plain_429_carries_retry_after(keel_anthropic: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        keel_anthropic.with_options(max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault("status=429")
        )
    assert caught.value.response.headers["retry-after"] == "1"


def test_sdk_retries_show_retry_count_0_1_2_and_then_succeed(sdk: anthropic.Anthropic, keel_emulator: Emulator) -> None:
    message = sdk.messages.create(
        model=MODEL, max_tokens=100, messages=HELLO, extra_headers=fault("status=529; times=2; retry_after_ms=5")
    )
    assert message.stop_reason == "end_turn"
    served = keel_emulator.access_log.entries()
    assert [(e.retry_count, e.status) for e in served] == [(0, 529), (1, 529), (2, 200)]
    assert message._request_id == served[-1].request_id
    assert len({e.request_id for e in served}) == 3


def test_sdk_honours_retry_after(keel_anthropic: anthropic.Anthropic, keel_emulator: Emulator) -> None:
    started = time.monotonic()
    keel_anthropic.messages.create(
        model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault("status=429; times=2; retry_after=0.3")
    )
    elapsed = time.monotonic() - started
    assert elapsed >= 0.6  # two waits of retry-after 0.3 s (the SDK's own backoff would be ~0.5 s + ~1 s)
    assert elapsed < 1.4
    assert [e.status for e in keel_emulator.access_log.entries()] == [429, 429, 200]


def test_x_should_retry_false_stops_the_sdk(keel_anthropic: anthropic.Anthropic, keel_emulator: Emulator) -> None:
    with pytest.raises(anthropic.InternalServerError):
        keel_anthropic.messages.create(
            model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault("status=500; should_retry=false")
        )
    assert len(keel_emulator.access_log.entries()) == 1


def test_mid_stream_error_is_a_status_200_api_status_error(sdk: anthropic.Anthropic, keel_emulator: Emulator) -> None:
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Go [[keel:words=30]]"}],
            extra_headers=fault("stream_error_after=6"),
        ) as stream,
    ):
        received.extend(stream.text_stream)
    err = caught.value
    assert err.status_code == 200 and err.type == "overloaded_error"
    assert len(received) == 3  # message_start, block start, ping, then three text deltas
    assert len(keel_emulator.access_log.entries()) == 1  # the SDK does not retry a mid-stream error


def test_dropped_stream_ends_with_stop_reason_none(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Go [[keel:words=30]]"}],
        extra_headers=fault("drop_after=8"),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason is None
    assert len(text.split()) == 5


def test_connection_reset_is_a_connection_error_the_sdk_retries(
    sdk: anthropic.Anthropic, keel_emulator: Emulator
) -> None:
    with pytest.raises(anthropic.APIConnectionError) as caught:
        sdk.with_options(max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault("connection_reset=true")
        )
    assert "Connection reset by peer" in str(caught.value.__cause__)
    message = sdk.messages.create(
        model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault("connection_reset=true; times=1")
    )
    assert message.stop_reason is not None
    served = keel_emulator.access_log.entries()
    assert [(e.status, e.retry_count) for e in served] == [(0, 0), (0, 0), (200, 1)]
    assert served[0].fault == "connection_reset=True"
    assert message._request_id == served[-1].request_id


def test_latency_fault_delays_the_first_event(keel_anthropic: anthropic.Anthropic) -> None:
    started = time.monotonic()
    with keel_anthropic.messages.stream(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Go [[keel:words=20]]"}],
        extra_headers=fault("ttft_ms=150; tps=200"),
    ) as stream:
        arrivals = [time.monotonic() - started for _ in stream.text_stream]
    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 19 / 200  # paced, and delivered as it is produced, not buffered


def test_bad_fault_header_is_a_400_naming_the_field(keel_anthropic: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="unknown fault field 'statsu'"):
        keel_anthropic.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_headers=fault("statsu=529"))


def test_server_rules_match_path_model_and_attempt() -> None:
    emulator = Emulator()
    emulator.inject("status=503", path="/v1/messages/count_tokens")
    emulator.inject("status=529", model="claude-opus-5", attempt=0)
    sdk = client(emulator, max_retries=0)
    sdk.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.OverloadedError):
        sdk.messages.create(model="claude-opus-5", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.InternalServerError):
        sdk.messages.count_tokens(model=MODEL, messages=HELLO)
    assert client(emulator).messages.create(model="claude-opus-5", max_tokens=5, messages=HELLO).stop_reason
    assert [e.status for e in emulator.access_log.entries()] == [200, 529, 503, 529, 200]


def test_scenario_probability_is_seeded(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text('seed = 3\n\n[[rules]]\npath = "/v1/messages"\nprobability = 0.5\nstatus = 529\n')

    def run() -> list[int]:
        emulator = Emulator(EmulatorConfig(scenario=load_scenario(path)))
        sdk = client(emulator, max_retries=0)
        for _ in range(20):
            with contextlib.suppress(anthropic.OverloadedError):
                sdk.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        return [e.status for e in emulator.access_log.entries()]

    first = run()
    assert first == run()
    assert 3 <= first.count(529) <= 17 and 200 in first


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[[rules]]\nstatus = 529\n\n[[rules]]\nstatus = 'soon'\n", r":5: rule 2: status: expected a whole number"),
        ("[[rules]]\nprobability = 2\nstatus = 500\n", r":2: rule 1: probability: expected a number from 0 to 1"),
        ("\n\n[[rules]]\nstaus = 500\n", r":4: rule 1: unknown fault field 'staus'"),
        ("[[rules]\nstatus = 500\n", r"bad\.toml:1: .*line 1"),
        ("seed = 1\nrulez = 2\n", r":2: unknown top-level key\(s\): rulez"),
        ("seed = 1\n\n[rulez]\nx = 1\n", r":3: unknown top-level key\(s\): rulez"),
        ("seed = 1\nrules = 'x'\n", r":2: 'rules' must be an array of tables"),
        ("[[rules]]\npath = '/v1/messages'\n", r"rule 1: a fault needs status"),
    ],
)
def test_bad_scenario_file_names_line_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FaultSpecError, match=reason):
        load_scenario(path)


def test_scenario_defaults() -> None:
    assert Scenario().pick("/v1/messages", MODEL, 0) is None


def test_client_read_timeouts_hold_in_process_too(keel_emulator: Emulator) -> None:
    """The in-process transport honours the SDK's timeout as a socket would, so timeouts can be tested offline."""
    sdk = client(keel_emulator, max_retries=1, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        sdk.messages.create(model=MODEL, max_tokens=50, messages=HELLO, extra_headers=fault("latency_ms=2000"))
    assert time.monotonic() - started < 1.5  # two attempts of 0.2 s and the SDK's short backoff, not 2 s each
    assert keel_emulator.access_log.entries() == []  # both attempts were abandoned before any response
    with (
        sdk.messages.stream(
            model=MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": "x [[keel:words=10]]"}],
            extra_headers=fault("tps=2"),
        ) as stream,
        pytest.raises(httpx2.ReadTimeout),
    ):
        stream.until_done()  # a stall between chunks longer than the read timeout
