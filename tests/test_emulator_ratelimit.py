"""Rate-limit buckets: the twelve `anthropic-ratelimit-*` headers seen on the real API, and enforced 429s.

The recorded headers are facts kept in tests/fixtures/response_headers.json (with where they were observed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import pytest

from keel.emulator import Emulator, EmulatorConfig, RateLimits, client

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "response_headers.json"
RECORDED: dict[str, str] = {
    name.lower(): value for name, value in json.loads(FIXTURE.read_text())["message"]["headers"].items()
}
RESET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
HELLO = [{"role": "user", "content": "Hello [[keel:words=5]]"}]


def test_every_message_response_has_the_recorded_ratelimit_headers(keel_anthropic: anthropic.Anthropic) -> None:
    recorded = {name for name in RECORDED if name.startswith("anthropic-ratelimit-")}
    assert len(recorded) == 12
    first = keel_anthropic.messages.with_raw_response.create(model="claude-opus-5", max_tokens=50, messages=HELLO)
    second = keel_anthropic.messages.with_raw_response.create(model="claude-opus-5", max_tokens=50, messages=HELLO)
    assert recorded <= {name.lower() for name in first.headers}
    assert int(second.headers["anthropic-ratelimit-requests-remaining"]) < int(
        first.headers["anthropic-ratelimit-requests-remaining"]
    )
    for name in sorted(recorded):
        if name.endswith("-reset"):  # an RFC 3339 time in UTC, to the second, as recorded
            assert RESET.fullmatch(RECORDED[name]) and RESET.fullmatch(first.headers[name]), name
        else:
            assert RECORDED[name].isdigit() and first.headers[name].isdigit(), name
    for name in ("input-tokens", "output-tokens", "tokens"):  # token counts rounded down to thousands, as recorded
        remaining = f"anthropic-ratelimit-{name}-remaining"
        assert int(RECORDED[remaining]) % 1000 == 0 and int(first.headers[remaining]) % 1000 == 0, remaining


def test_enforced_request_limit_answers_429_with_retry_after() -> None:
    emulator = Emulator(EmulatorConfig(rate_limits=RateLimits(requests_per_minute=3, enforce=True)))
    sdk = client(emulator, max_retries=0)
    for _ in range(3):
        sdk.messages.create(model="claude-opus-5", max_tokens=50, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk.messages.create(model="claude-opus-5", max_tokens=50, messages=HELLO)
    err = caught.value
    assert err.type == "rate_limit_error" and "3 requests per minute" in str(err.api_message)
    assert 1 <= int(err.response.headers["retry-after"]) <= 20  # one request refills in 20 s at 3 RPM
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_enforced_input_token_limit_counts_the_prompt() -> None:
    emulator = Emulator(EmulatorConfig(rate_limits=RateLimits(input_tokens_per_minute=1_000, enforce=True)))
    sdk = client(emulator, max_retries=0)
    sdk.messages.create(model="claude-opus-5", max_tokens=50, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError, match="input tokens per minute"):
        sdk.messages.create(model="claude-opus-5", max_tokens=50, messages=[{"role": "user", "content": "w " * 2000}])
