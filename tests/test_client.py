"""keel.Client against the emulator: replies, records, classified retries and policies."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import anthropic
import pytest
from keel_helpers import ask, fault, keel_client

from keel import BACKGROUND, AsyncClient, CallFailed, Client, RetryPolicy, load_prices
from keel._records import read_records
from keel.emulator import Emulator

MODEL = "claude-sonnet-5-5"


def test_create_returns_the_sdk_message_with_outcome_and_record(keel_emulator: Emulator) -> None:
    reply = keel_client(keel_emulator).messages.create(model=MODEL, max_tokens=200, messages=ask("Hi"))
    served = keel_emulator.access_log.entries()
    assert isinstance(reply.message, anthropic.types.Message)
    assert reply.outcome.kind == "end_turn" and reply.text == reply.message.content[0].text
    record = reply.record
    assert record.request_id == served[-1].request_id == reply.message._request_id
    assert record.usage.input_tokens == reply.message.usage.input_tokens
    assert record.usage.output_tokens == reply.message.usage.output_tokens > 0
    assert record.cost_usd == load_prices().cost(MODEL, reply.message.usage)
    assert record.mode == "standard" and record.policy == "interactive"
    assert record.attempts == 1 and record.retries == 0 and record.error_class is None


def test_request_ids_in_attempt_records_equal_what_the_emulator_served(keel_emulator: Emulator, tmp_path: Path) -> None:
    """Under a fault mix, every response the emulator sent appears once in keel's attempt records."""
    records = tmp_path / "records.jsonl"
    keel = keel_client(keel_emulator, records=records)
    keel_emulator.inject("status=529; retry_after_ms=1", probability=0.3)
    keel_emulator.inject("status=429; retry_after_ms=1", probability=0.2)
    keel_emulator.inject("stream_error_after=4", probability=0.2)
    outcomes = {"ok": 0, "failed": 0}
    for n in range(30):
        try:
            if n % 3 == 0:
                with keel.messages.stream(model=MODEL, max_tokens=100, messages=ask(f"s{n} [[keel:words=8]]")) as s:
                    s.until_done()
            else:
                keel.messages.create(model=MODEL, max_tokens=100, messages=ask(f"c{n}"))
            outcomes["ok"] += 1
        except (CallFailed, Exception):
            outcomes["failed"] += 1
    keel.close()
    attempts = [r for r in read_records(records) if r["kind"] == "attempt"]
    served = [e.request_id for e in keel_emulator.access_log.entries()]
    assert sorted(r["request_id"] for r in attempts) == sorted(served)
    assert len(served) > 30 and outcomes["ok"] > 10
    calls = [r for r in read_records(records) if r["kind"] == "call"]
    assert len(calls) == 30
    assert sum(c["attempts"] for c in calls) == len(attempts)


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("status=400", "invalid_request"),
        ("status=401", "authentication"),
        ("status=402", "billing"),
        ("status=403", "permission"),
        ("status=404", "not_found"),
        ("status=413", "request_too_large"),
        ("status=429; error_code=enforced_spend_limit_reached", "spend_cap"),
        ("status=429; error_code=contract_spend_limit_reached", "contract_spend_cap"),
    ],
)
def test_never_retried_errors_raise_at_once(keel_emulator: Emulator, spec: str, name: str) -> None:
    keel = keel_client(keel_emulator, policy=BACKGROUND)
    with pytest.raises(CallFailed) as caught:
        keel.messages.create(model=MODEL, max_tokens=50, messages=ask("x"), extra_headers=fault(spec))
    err = caught.value
    served = keel_emulator.access_log.entries()
    assert len(served) == 1  # neither the SDK nor keel retried (the SDK alone would retry a 429)
    assert err.error_class.name == name and not err.error_class.retryable
    assert err.request_id == served[0].request_id and err.record.attempts == 1
    assert isinstance(err.sdk_error, anthropic.APIStatusError)
    assert err.request_id in str(err)


def test_invalid_parameter_surfaces_the_field_and_request_id(keel_emulator: Emulator) -> None:
    with pytest.raises(CallFailed) as caught:
        keel_client(keel_emulator).messages.create(
            model=MODEL, max_tokens=50, messages=ask("x"), extra_body={"temperature": 0.5}
        )
    assert "temperature: Extra inputs are not permitted" in str(caught.value)
    assert caught.value.error_class.action == "fix_request"
    assert len(keel_emulator.access_log.entries()) == 1


def test_sdk_retries_are_recorded_attempt_by_attempt(keel_emulator: Emulator) -> None:
    reply = keel_client(keel_emulator).messages.create(
        model=MODEL, max_tokens=100, messages=ask("x"), extra_headers=fault("status=529; times=2; retry_after_ms=1")
    )
    assert reply.record.attempts == 3 and reply.record.retries == 2
    served = keel_emulator.access_log.entries()
    assert [e.retry_count for e in served] == [0, 1, 2]


def test_interactive_deadline_fails_fast_instead_of_waiting(keel_emulator: Emulator) -> None:
    policy = RetryPolicy("chat", max_retries=5, timeout=5.0, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(CallFailed) as caught:
        keel_client(keel_emulator, policy=policy).messages.create(
            model=MODEL, max_tokens=50, messages=ask("x"), extra_headers=fault("status=429; retry_after=3")
        )
    assert time.monotonic() - started < 0.5  # a 3 s retry-after cannot fit a 0.5 s deadline: no wait at all
    assert caught.value.deadline_exceeded and "deadline" in str(caught.value)
    assert caught.value.error_class.name == caught.value.record.error_class == "rate_limited"
    assert len(keel_emulator.access_log.entries()) == 1


def test_a_deadline_that_runs_out_between_attempts_reports_the_last_error(keel_emulator: Emulator) -> None:
    policy = RetryPolicy("chat", max_retries=5, timeout=5.0, deadline=0.2)  # the SDK's first backoff is ~0.5 s
    with pytest.raises(CallFailed) as caught:
        keel_client(keel_emulator, policy=policy).messages.create(
            model=MODEL, max_tokens=50, messages=ask("x"), extra_headers=fault("status=529")
        )
    served = keel_emulator.access_log.entries()
    assert [e.status for e in served] == [529]
    assert caught.value.deadline_exceeded and "deadline of 0.2 s" in str(caught.value)
    assert caught.value.error_class.name == caught.value.record.error_class == "overloaded"
    assert caught.value.request_id == served[0].request_id


def test_background_policy_rides_out_an_overload_storm(keel_emulator: Emulator) -> None:
    """Seven 529s in a row: more than the SDK's own retries; keel's rounds carry on until success."""
    policy = RetryPolicy("bulk", max_retries=2, timeout=5.0, budget=20.0, backoff_base=0.01, backoff_cap=0.05)
    keel_emulator.inject("status=529; retry_after_ms=1", limit=7)
    reply = keel_client(keel_emulator, policy=policy).messages.create(model=MODEL, max_tokens=100, messages=ask("x"))
    served = keel_emulator.access_log.entries()
    assert [e.status for e in served] == [529] * 7 + [200]
    assert [e.retry_count for e in served] == [0, 1, 2, 0, 1, 2, 0, 1]  # the SDK's rounds of three attempts
    assert reply.record.attempts == 8 and reply.record.retries == 7


def test_background_rounds_honour_retry_after(keel_emulator: Emulator) -> None:
    policy = RetryPolicy("bulk", max_retries=0, timeout=5.0, budget=20.0, backoff_base=0.001, backoff_cap=0.001)
    keel_emulator.inject("status=529; retry_after=0.25", limit=2)
    started = time.monotonic()
    keel_client(keel_emulator, policy=policy).messages.create(model=MODEL, max_tokens=100, messages=ask("x"))
    assert time.monotonic() - started >= 0.5


def test_background_budget_runs_out_with_a_classified_error(keel_emulator: Emulator) -> None:
    policy = RetryPolicy("bulk", max_retries=0, timeout=5.0, budget=0.3, backoff_base=0.05, backoff_cap=0.1)
    keel_emulator.inject("status=529; retry_after_ms=1")
    with pytest.raises(CallFailed) as caught:
        keel_client(keel_emulator, policy=policy).messages.create(model=MODEL, max_tokens=100, messages=ask("x"))
    assert caught.value.error_class.name == "overloaded" and caught.value.error_class.retryable
    assert caught.value.record.attempts == len(keel_emulator.access_log.entries()) >= 2


def test_policy_per_call_overrides_the_client(keel_emulator: Emulator) -> None:
    keel = keel_client(keel_emulator)
    reply = keel.messages.create(model=MODEL, max_tokens=100, messages=ask("x"), policy="background")
    assert reply.record.policy == "background"
    with pytest.raises(ValueError, match="policy: expected one of interactive, background"):
        keel.messages.create(model=MODEL, max_tokens=100, messages=ask("x"), policy="eventually")


def test_auto_mode_streams_what_the_sdk_would_refuse(keel_emulator: Emulator) -> None:
    keel = keel_client(keel_emulator)
    with pytest.raises(ValueError, match="Streaming is required"):
        keel.sdk.messages.create(model="claude-haiku-5-5", max_tokens=64_000, messages=ask("x"))
    reply = keel.messages.create(model="claude-haiku-5-5", max_tokens=64_000, messages=ask("x"), mode="auto")
    assert reply.record.mode == "stream" and reply.outcome.kind == "end_turn"
    assert keel_emulator.access_log.entries()[-1].stream
    short = keel.messages.create(model="claude-haiku-5-5", max_tokens=500, messages=ask("x"), mode="auto")
    assert short.record.mode == "standard"


def test_broken_records_path_fails_at_construction(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write the records file"):
        Client(api_key="x", records=blocker / "records.jsonl")


async def test_async_client_create_retry_and_stream(keel_emulator: Emulator) -> None:
    from keel import AsyncClient
    from keel.emulator import async_client

    keel = AsyncClient(async_client(keel_emulator, _strict_response_validation=True))
    reply = await keel.messages.create(
        model=MODEL, max_tokens=100, messages=ask("x"), extra_headers=fault("status=529; times=1; retry_after_ms=1")
    )
    assert reply.record.attempts == 2 and reply.request_id == keel_emulator.access_log.entries()[-1].request_id
    keel_emulator.inject("stream_error_after=7", limit=1)
    async with keel.messages.stream(
        model=MODEL, max_tokens=200, messages=ask("y [[keel:words=20]]"), on_interrupt="continue"
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
    full = await keel.messages.create(model=MODEL, max_tokens=200, messages=ask("y [[keel:words=20]]"))
    assert text == full.text
    assert stream.reply is not None and stream.reply.record.rounds == 2
    await keel.close()
    assert json.dumps(reply.record.usage.input_tokens)


async def test_count_tokens_is_recorded_like_any_call(keel_emulator: Emulator, tmp_path: Path) -> None:
    from keel import AsyncClient
    from keel.emulator import async_client

    keel = keel_client(keel_emulator, records=tmp_path / "records.jsonl")
    counted = keel.messages.count_tokens(model=MODEL, messages=ask("How many tokens is this?"))
    async_keel = AsyncClient(async_client(keel_emulator), records=tmp_path / "records.jsonl")
    assert await async_keel.messages.count_tokens(model=MODEL, messages=ask("How many tokens is this?")) == counted
    reply = keel.messages.create(model=MODEL, max_tokens=50, messages=ask("How many tokens is this?"))
    assert counted == reply.message.usage.input_tokens
    keel.close()
    await async_keel.close()
    calls = [r for r in read_records(tmp_path / "records.jsonl") if r["kind"] == "call"]
    counts = [c for c in calls if c["outcome"] == "messages.count_tokens"]
    assert len(counts) == 2 and all(c["mode"] == "standard" and c["request_id"] for c in counts)
    served = {e.request_id for e in keel_emulator.access_log.entries()}
    assert {c["request_id"] for c in calls} == served


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_a_mode_a_single_call_cannot_take_is_a_clear_error_before_any_request(
    keel_emulator: Emulator, mode: str
) -> None:
    keel = keel_client(keel_emulator)
    with pytest.raises(ValueError, match=rf"mode: expected 'standard', 'stream' or 'auto' for a call, got '{mode}'"):
        keel.messages.create(model=MODEL, max_tokens=10, messages=ask("x"), mode=mode)  # type: ignore[arg-type]
    assert keel_emulator.access_log.entries() == []


def test_the_policy_timeout_bounds_each_attempt_and_a_callers_own_timeout_wins(served_emulator: Emulator) -> None:
    """Over loopback (the SDK's timeouts apply), sync and async: a 0.5 s answer outlasts a 0.1 s policy timeout,
    and a caller's own `timeout=` replaces it for that call."""
    tight = RetryPolicy("tight", max_retries=0, timeout=0.1)
    slow = {"model": MODEL, "max_tokens": 20, "messages": ask("x"), "extra_headers": fault("latency_ms=500")}

    with Client(policy=tight) as keel, pytest.raises(CallFailed) as caught:
        keel.messages.create(**slow)
    assert caught.value.error_class.name == "timeout" and isinstance(caught.value.sdk_error, anthropic.APITimeoutError)
    with Client(policy=tight) as keel:
        assert keel.messages.create(**slow, timeout=5.0).record.error_class is None

    async def both_async() -> tuple[BaseException | None, str | None]:
        async with AsyncClient(policy=tight) as keel:
            try:
                await keel.messages.create(**slow)
                failure = None
            except CallFailed as err:
                failure = err.sdk_error
            return failure, (await keel.messages.create(**slow, timeout=5.0)).record.error_class

    failure, error_class = asyncio.run(both_async())
    assert isinstance(failure, anthropic.APITimeoutError) and error_class is None
