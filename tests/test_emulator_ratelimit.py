"""Rate limits: buckets per API key and model class, the `anthropic-ratelimit-*` headers, 429s and the ramp.

Facts the tests rely on (Claude docs, Rate limits; recorded responses of the real API):
- every response carries twelve headers, `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
  remaining,reset}`; resets are RFC 3339 (`2025-10-30T16:17:36Z`), token counts are rounded to thousands, and with no
  narrower limit in effect `tokens-*` is the total of input and output (recorded: limit 280000 = 200000 + 80000);
- limits are continuously refilled buckets; only uncached input (and cache writes) counts toward ITPM;
- a 429 is `rate_limit_error` with `retry-after` in whole seconds; an acceleration limit answers a sudden ramp with
  `error.details.error_code` `ramp_limit_exceeded`.

Time is a frozen `Clock` the tests move.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from keel.emulator import (
    Clock,
    Emulator,
    EmulatorConfig,
    EmulatorTransport,
    FaultSpecError,
    Limits,
    Ramp,
    RateLimits,
    client,
    load_scenario,
)

MODEL = "claude-opus-5"
HELLO: list[Any] = [{"role": "user", "content": "Hello [[keel:words=5]]"}]
HEADERS = {
    f"anthropic-ratelimit-{bucket}-{part}"
    for bucket in ("requests", "tokens", "input-tokens", "output-tokens")
    for part in ("limit", "remaining", "reset")
}
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def enforced(clock: Clock, **limits: Any) -> Emulator:
    return Emulator(EmulatorConfig(clock=clock, rate_limits=RateLimits(enforce=True, **limits)))


def say(sdk: anthropic.Anthropic, model: str = MODEL, **params: Any) -> Any:
    """One request; its raw response (the parsed message is `.parse()`)."""
    params.setdefault("messages", HELLO)
    params.setdefault("max_tokens", 50)
    return sdk.messages.with_raw_response.create(model=model, **params)


@pytest.fixture
def clock() -> Clock:
    return Clock(speed=0)


def test_every_message_response_carries_the_twelve_headers(clock: Clock) -> None:
    emulator = Emulator(EmulatorConfig(clock=clock, rate_limits=RateLimits(400, 200_000, 80_000)))
    sdk = client(emulator, max_retries=0, _strict_response_validation=True)
    first = say(sdk)
    with sdk.messages.with_streaming_response.create(model=MODEL, max_tokens=50, messages=HELLO, stream=True) as sse:
        streamed = sse.headers
    for headers in (first.headers, streamed):
        assert set(headers) >= HEADERS
        assert all(re.fullmatch(RFC3339, headers[name]) for name in HEADERS if name.endswith("-reset"))
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "399"
    assert streamed["anthropic-ratelimit-requests-remaining"] == "398"
    assert first.headers["anthropic-ratelimit-input-tokens-remaining"] == "199000"  # 199,984 rounded down
    assert first.headers["anthropic-ratelimit-tokens-limit"] == "280000"  # input and output together
    assert first.headers["anthropic-ratelimit-tokens-remaining"] == "279000"
    for failing in (
        {"messages": []},  # a 400
        {"extra_headers": {"x-keel-fault": "status=529"}},  # an injected fault
    ):
        with pytest.raises(anthropic.APIStatusError) as caught:
            say(sdk, **failing)
        assert set(caught.value.response.headers) >= HEADERS
        assert caught.value.response.headers["anthropic-ratelimit-requests-remaining"] == "398"  # took nothing


def test_over_the_request_limit_is_a_429_in_the_api_shape(clock: Clock) -> None:
    emulator = enforced(clock, requests_per_minute=3)
    sdk = client(emulator, max_retries=0, _strict_response_validation=True)
    for _ in range(3):
        say(sdk)
    with pytest.raises(anthropic.RateLimitError) as caught:
        say(sdk)
    err = caught.value
    assert err.type == "rate_limit_error" and err.error_code is None
    assert (
        "would exceed the rate limit for your organization" in err.message and "of 3 requests per minute" in err.message
    )
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id == err.response.headers["request-id"]
    headers = err.response.headers
    assert headers["retry-after"] == "20" and headers["retry-after-ms"] == "20000"  # 3 RPM: one every 20 s
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    served = emulator.access_log.entries()[-1]
    assert (served.status, served.fault, served.request_id) == (429, None, err.request_id)
    clock.advance(19.9)
    with pytest.raises(anthropic.RateLimitError):
        say(sdk)
    clock.advance(0.1)
    assert say(sdk).parse().stop_reason == "end_turn"


def test_on_a_faster_clock_retry_after_is_in_real_seconds() -> None:
    sdk = client(enforced(Clock(speed=10), requests_per_minute=3), max_retries=0)
    for _ in range(3):
        say(sdk)
    with pytest.raises(anthropic.RateLimitError) as caught:
        say(sdk)
    headers = caught.value.response.headers  # one request every 20 s of the clock: every 2 s of real time
    assert 1_900 <= int(headers["retry-after-ms"]) <= 2_000 and headers["retry-after"] == "2"


def test_the_sdk_waits_what_retry_after_asks_and_then_gets_through(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the SDK's wait between attempts moves the emulator's clock instead
        waits.append(seconds)
        clock.advance(seconds)

    sdk = client(enforced(clock, requests_per_minute=2), max_retries=2)
    say(sdk)
    say(sdk)
    monkeypatch.setattr(time, "sleep", sleep)
    assert say(sdk).http_request.headers["x-stainless-retry-count"] == "1"
    assert waits == [30.0]  # 2 RPM: one request every 30 s, from retry-after-ms


def test_buckets_are_per_api_key_and_per_model_class(clock: Clock) -> None:
    limits = RateLimits(1, 100_000, 10_000, enforce=True, keys={"tenant-b": Limits(2, 100_000, 10_000)})
    emulator = Emulator(EmulatorConfig(clock=clock, rate_limits=limits))
    tenant_a = client(emulator, max_retries=0)
    tenant_b = client(emulator, api_key="tenant-b", max_retries=0)  # accepted: it has limits of its own
    say(tenant_a)
    with pytest.raises(anthropic.RateLimitError):
        say(tenant_a)
    with pytest.raises(anthropic.RateLimitError):
        say(tenant_a, "claude-opus-5-5")  # the same class: opus
    say(tenant_a, "claude-sonnet-5")  # another class, other buckets
    assert say(tenant_b).headers["anthropic-ratelimit-requests-limit"] == "2"
    say(tenant_b)
    with pytest.raises(anthropic.RateLimitError):
        say(tenant_b)
    with pytest.raises(anthropic.AuthenticationError):
        say(client(emulator, api_key="tenant-c", max_retries=0))


def test_input_tokens_count_uncached_input_and_cache_writes_not_reads(clock: Clock) -> None:
    sdk = client(enforced(clock, input_tokens_per_minute=2_000), max_retries=0)
    system = [{"type": "text", "text": " ".join(["word"] * 1000)}]
    cached = [{**system[0], "cache_control": {"type": "ephemeral"}}]
    first = say(sdk, system=cached)
    assert first.parse().usage.cache_creation_input_tokens == 1000
    for _ in range(5):  # each reads the 1000 cached tokens: only ~10 count
        assert say(sdk, system=cached).parse().usage.cache_read_input_tokens == 1000
    clock.advance(60)
    say(sdk, system=system)  # the same prompt uncached: all of it counts, twice is too much
    with pytest.raises(anthropic.RateLimitError, match="of 2,000 input tokens per minute"):
        say(sdk, system=system)


def test_output_tokens_are_taken_as_produced_never_reserved(clock: Clock) -> None:
    sdk = client(enforced(clock, output_tokens_per_minute=1_000), max_retries=0)
    say(sdk, max_tokens=20_000)  # far above the limit: max_tokens is not reserved
    long = say(sdk, max_tokens=2_000, messages=[{"role": "user", "content": "[[keel:words=1200]]"}])
    assert long.parse().usage.output_tokens == 1200
    assert long.headers["anthropic-ratelimit-output-tokens-remaining"] == "0"  # the 5 tokens of the first answer
    with pytest.raises(anthropic.RateLimitError, match="of 1,000 output tokens per minute") as caught:
        say(sdk)
    headers = caught.value.response.headers
    # 205 tokens overdrawn: 206 to wait for at 1000 a minute
    assert headers["retry-after-ms"] == "12360" and headers["retry-after"] == "13"
    assert headers["anthropic-ratelimit-tokens-limit"] == "1000"  # tokens-* shows the limit that binds
    clock.advance(12.36)
    say(sdk)


def test_a_stream_takes_its_output_tokens_when_it_ends(clock: Clock) -> None:
    sdk = client(enforced(clock, output_tokens_per_minute=1_000), max_retries=0)
    long = [{"role": "user", "content": "[[keel:words=1200]]"}]
    with sdk.messages.stream(model=MODEL, max_tokens=2_000, messages=long) as stream:
        next(iter(stream))  # message_start: the rest is still being generated
        during = say(sdk)
        assert during.headers["anthropic-ratelimit-output-tokens-remaining"] == "1000"
        assert stream.get_final_message().usage.output_tokens == 1200
    with pytest.raises(anthropic.RateLimitError, match="output tokens"):
        say(sdk)


def test_an_acceleration_limit_answers_a_sudden_ramp(clock: Clock) -> None:
    emulator = enforced(clock, requests_per_minute=100, ramp=Ramp(start=0.05, growth=0.5))
    sdk = client(emulator, max_retries=0, _strict_response_validation=True)
    for _ in range(5):  # 5% of 100 RPM at first
        say(sdk)
    with pytest.raises(anthropic.RampLimitExceededError) as caught:
        say(sdk)
    err = caught.value
    assert err.error_code == "ramp_limit_exceeded" and err.type == "rate_limit_error"
    assert int(err.response.headers["retry-after"]) >= 1
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "95"  # the limit itself is not reached
    say(sdk, "claude-haiku-5-5")  # another class ramps on its own
    clock.advance(60)  # 55% now
    for _ in range(50):
        say(sdk)


def test_without_a_ramp_the_same_burst_passes(clock: Clock) -> None:
    sdk = client(enforced(clock, requests_per_minute=100), max_retries=0)
    for _ in range(100):
        say(sdk)


def test_a_scenario_file_sets_limits_keys_and_ramp(tmp_path: Path, clock: Clock) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        "[limits]\nrpm = 5\notpm = 9000\n\n"
        '[[limits.keys]]\nkey = "batch-key"\nrpm = 1\n\n'
        "[limits.ramp]\nstart = 0.4\ngrowth = 0.1\n"
    )
    loaded = load_scenario(scenario).limits
    assert loaded == RateLimits(
        5, 2_000_000, 9_000, enforce=True, keys={"batch-key": Limits(1, 2_000_000, 9_000)}, ramp=Ramp(0.4, 0.1)
    )
    emulator = Emulator(EmulatorConfig(clock=clock, scenario=load_scenario(scenario)))
    batch_key = client(emulator, api_key="batch-key", max_retries=0)
    say(batch_key)
    with pytest.raises(anthropic.RateLimitError):
        say(batch_key)
    sdk = client(emulator, max_retries=0)
    say(sdk)
    say(sdk)  # 40% of 5 RPM
    with pytest.raises(anthropic.RampLimitExceededError):
        say(sdk)


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ("[limits]\nrpm = 0\n", ":2: [limits]: rpm: expected a whole number >= 1, got 0"),
        ("[limits]\nitpm = 'lots'\n", ":2: [limits]: itpm: expected a whole number >= 1, got 'lots'"),
        ("[limits]\nenforce = 1\n", ":2: [limits]: enforce: expected true or false, got 1"),
        ("[limits]\nrmp = 5\n", ":2: [limits]: rmp: unknown field (known: enforce, itpm, keys, otpm, ramp, rpm)"),
        (
            '[limits]\n[[limits.keys]]\nkey = "a"\n[[limits.keys]]\nkey = "b"\notpm = -1\n',
            ":6: [[limits.keys]] #2: otpm: expected a whole number >= 1, got -1",
        ),
        ('[[limits.keys]]\nkey = "a"\n[[limits.keys]]\nkey = "a"\n', ":4: [[limits.keys]] #2: key: the same key"),
        ("[[limits.keys]]\nrpm = 3\n", ":1: [[limits.keys]] #1: key: expected the API key, a non-empty string"),
        ("[limits.ramp]\nstart = 1.5\n", ":2: [limits.ramp]: start: expected a number > 0 and <= 1, got 1.5"),
        ("[limits.ramp]\ngrowth = 0\n", ":2: [limits.ramp]: growth: expected a number > 0, got 0"),
    ],
)
def test_bad_limits_in_a_scenario_name_the_field_and_line(tmp_path: Path, toml: str, error: str) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(toml)
    with pytest.raises(FaultSpecError) as caught:
        load_scenario(scenario)
    assert str(caught.value).startswith(f"{scenario}{error}")


def test_bad_limits_in_code_name_the_field() -> None:
    with pytest.raises(ValueError, match="requests_per_minute: expected a whole number >= 1, got 0"):
        RateLimits(requests_per_minute=0)
    with pytest.raises(ValueError, match="start: expected a number > 0 and <= 1, got 2"):
        Ramp(start=2)


def test_the_access_log_file_has_a_line_per_request_and_no_key(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "access.jsonl"
    emulator = Emulator(EmulatorConfig(api_key=None, clock=clock, access_log=path))
    keys = ("sk-ant-tenant-a-0123456789", "sk-ant-tenant-b-9876543210")
    tenant_a, tenant_b = (client(emulator, api_key=key, max_retries=2) for key in keys)
    answer = say(tenant_a, extra_headers={"x-keel-fault": "status=529; times=1; retry_after_ms=1"})
    say(tenant_b)
    with httpx2.Client(transport=EmulatorTransport(emulator), base_url="http://emulator.keel.invalid") as http:
        http.get("/v1/nothing", headers={"x-api-key": keys[0]})
    emulator.access_log.close()
    text = path.read_text()
    assert not any(key in text for key in keys)
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["status"], line["retry_count"]) for line in lines] == [(529, 0), (200, 1), (200, 0), (404, None)]
    assert lines[0]["fault"].startswith("status=529;") and lines[1]["fault"] is None
    assert lines[1]["request_id"] == answer.headers["request-id"]
    assert lines[1]["model"] == MODEL and lines[1]["method"] == "POST" and lines[1]["path"] == "/v1/messages"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["time"])
    ids = [line["key_id"] for line in lines]
    assert ids[0] == ids[1] == ids[3] != ids[2] and all(re.fullmatch(r"key_[0-9a-f]{12}", i) for i in ids)
    assert [entry.key_id for entry in emulator.access_log.entries()] == ids


RECORDED: dict[str, str] = {
    name.lower(): value
    for name, value in json.loads((Path(__file__).resolve().parent / "fixtures" / "response_headers.json").read_text())[
        "message"
    ]["headers"].items()
}


def test_the_headers_look_like_the_recorded_ones(keel_anthropic: anthropic.Anthropic) -> None:
    """The twelve headers of a recorded real response (tests/fixtures/response_headers.json), in the same forms."""
    recorded = {name for name in RECORDED if name.startswith("anthropic-ratelimit-")}
    assert recorded == HEADERS
    first = keel_anthropic.messages.with_raw_response.create(model=MODEL, max_tokens=50, messages=HELLO)
    for name in sorted(recorded):
        if name.endswith("-reset"):  # an RFC 3339 time in UTC, to the second, as recorded
            assert re.fullmatch(RFC3339, RECORDED[name]) and re.fullmatch(RFC3339, first.headers[name]), name
        else:
            assert RECORDED[name].isdigit() and first.headers[name].isdigit(), name
    for name in ("input-tokens", "output-tokens", "tokens"):  # token counts rounded down to thousands, as recorded
        remaining = f"anthropic-ratelimit-{name}-remaining"
        assert int(RECORDED[remaining]) % 1000 == 0 and int(first.headers[remaining]) % 1000 == 0, remaining
