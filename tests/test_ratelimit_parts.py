"""The limiter's parts that need no backend: the input estimate, model classes, URL redaction, how headers are
read, and argument checks."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anthropic
import httpx2
import pytest

from keel.ratelimit import (
    MEDIA_TOKENS,
    Adaptation,
    Limits,
    RateLimiter,
    Reservation,
    estimate_input_tokens,
    model_class,
    redact_url,
)

MODEL = "claude-sonnet-5"
PROSE = "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun. " * 20


def test_the_estimate_is_above_a_real_tokenizers_count_for_prose_and_tools() -> None:
    messages = [{"role": "user", "content": PROSE}]
    estimate = estimate_input_tokens(messages)
    assert estimate >= len(PROSE) / 3  # real tokenizers: about 4 characters a token for English
    tool = {"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object"}}
    with_tools = estimate_input_tokens(messages, system="Be brief.", tools=[tool])
    assert with_tools > estimate + len("Be brief.") / 3 + len("Weather for a city") / 3


def test_the_estimate_counts_other_scripts_a_character_a_token_and_media_a_fixed_amount() -> None:
    assert estimate_input_tokens([{"role": "user", "content": "日本語のテキスト"}]) >= 8
    picture = base64.b64encode(bytes(300_000)).decode()  # 400 kB of base64 does not make 130k tokens
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": picture}}
    by_url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    text_document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": PROSE}}
    only_text = estimate_input_tokens([{"role": "user", "content": [{"type": "text", "text": "Describe."}]}])
    content = [image, by_url, text_document, {"type": "text", "text": "Describe."}]
    estimate = estimate_input_tokens([{"role": "user", "content": content}])
    assert 2 * MEDIA_TOKENS + len(PROSE) / 3 < estimate < 2 * MEDIA_TOKENS + len(PROSE) / 3 + only_text + 60


def test_the_estimate_reads_the_sdks_own_objects() -> None:
    block = anthropic.types.TextBlock(type="text", text=PROSE, citations=None)
    as_object = estimate_input_tokens([{"role": "assistant", "content": [block]}])
    as_dict = estimate_input_tokens([{"role": "assistant", "content": [{"type": "text", "text": PROSE}]}])
    assert as_object == as_dict


def test_a_reservation_for_a_request_takes_an_exact_count_when_given() -> None:
    messages = [{"role": "user", "content": PROSE}]
    estimated = Reservation.for_request(MODEL, messages, max_tokens=512)
    assert (estimated.input_tokens, estimated.output_tokens) == (estimate_input_tokens(messages), 512)
    exact = Reservation.for_request(MODEL, messages, max_tokens=512, input_tokens=321)  # from count_tokens
    assert (exact.input_tokens, exact.output_tokens) == (321, 512)
    with pytest.raises(ValueError):
        Reservation(MODEL, -1, 10)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-5-20251101", "opus"),
        ("claude-opus-5-5", "opus"),
        ("claude-sonnet-4-6", "sonnet"),
        ("claude-3-5-sonnet-20241022", "sonnet"),
        ("claude-haiku-5-5", "haiku"),
        ("claude-fable-5-2", "fable"),
        ("my-fine-tune", "my-fine-tune"),
    ],
)
def test_models_are_grouped_by_family(model: str, expected: str) -> None:
    assert model_class(model) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:secret@127.0.0.1:1/0", "redis://user:***@127.0.0.1:1/0"),
        ("redis://:s%40cret@redis.internal:6380/2", "redis://:***@redis.internal:6380/2"),
        ("rediss://default:pw@cache.example:6379", "rediss://default:***@cache.example:6379"),
        ("unix:///run/redis.sock?db=1&password=secret", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://[::1", "<unparseable URL>"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def pause_after(headers: dict[str, str], status: int = 429) -> float:
    limiter = RateLimiter(Limits(requests=10, input_tokens=100, output_tokens=100))
    limiter.observe(MODEL, headers, status)
    return limiter.snapshot(MODEL).paused_for


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date() -> None:
    in_half_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert pause_after({"retry-after-ms": "1500", "retry-after": "9"}) == pytest.approx(1.5, abs=0.5)
    assert pause_after({"Retry-After": "2"}) == pytest.approx(2, abs=0.5)
    assert pause_after({"retry-after": in_half_a_minute}) == pytest.approx(30, abs=1.5)  # whole seconds
    assert pause_after({"retry-after": "3600"}) == pytest.approx(60, abs=0.5)  # at most Adaptation.max_pause
    assert pause_after({"retry-after": "soon"}) == 0  # unreadable: no pause (the rate is still cut)
    assert pause_after({"retry-after": "5"}, 200) == 0  # a pause only on a throttling status


def test_headers_come_as_httpx_headers_too_and_garbage_is_ignored() -> None:
    limiter = RateLimiter(Limits(requests=10, input_tokens=100, output_tokens=100))
    headers = httpx2.Headers(
        {"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-input-tokens-limit": "lots"}
    )
    limiter.observe(MODEL, headers)
    assert limiter.limits_for(MODEL).capacities == (600, 100, 100)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Limits(requests=0, input_tokens=1, output_tokens=1)
    with pytest.raises(ValueError):
        Adaptation(decrease=2)
    with pytest.raises(ValueError, match="not the API key"):
        RateLimiter(Limits(requests=1, input_tokens=1, output_tokens=1), name="sk-ant-api03-abc")
    one, other = (RateLimiter(Limits(requests=5, input_tokens=10, output_tokens=10)) for _ in range(2))
    permit = one.acquire(Reservation(MODEL, 1, 1))
    with pytest.raises(ValueError, match="another limiter"):
        other.release(permit)
    with pytest.raises(ValueError, match="negative"):
        permit.reconcile(-1, 0)
    assert "open" in repr(permit)
