"""keel's resilient streams: transparent retries before content, then raise or continue (stitched).

Every test runs on both sides: the sync `Client` and the async `AsyncClient`.
"""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest
from keel_helpers import SIDES, Side, ask, fault, keel_client, stream_on

from keel import CallFailed, RetryPolicy, StreamInterrupted
from keel._continuation import supports_prefill
from keel.emulator import Emulator

LONG = "Tell me everything [[keel:words=40]]"

pytestmark = pytest.mark.parametrize("side", SIDES)


def full_text(emulator: Emulator, model: str, prompt: str = LONG) -> str:
    """The uninterrupted answer, from the emulator's deterministic responder."""
    return keel_client(emulator).messages.create(model=model, max_tokens=500, messages=ask(prompt)).text


def test_stream_yields_text_and_records_ttft(keel_emulator: Emulator, side: Side) -> None:
    got = stream_on(side, keel_emulator, model="claude-opus-5", max_tokens=500, messages=ask(LONG))
    assert got.final is not None and got.error is None
    assert len(got.pieces) == 40 and "".join(got.pieces) == got.final.content[0].text
    assert got.stream.reply is not None
    record = got.stream.reply.record
    assert record.mode == "stream" and record.ttft_ms is not None and 0 < record.ttft_ms <= record.latency_ms
    assert record.request_id == got.stream.request_id == keel_emulator.access_log.entries()[-1].request_id
    assert got.final._request_id == got.stream.request_id
    assert record.rounds == 1 and record.attempts == 1 and record.retries == 0


@pytest.mark.parametrize("spec", ["drop_after=2", "stream_error_after=3", "status=529; retry_after_ms=1"])
def test_failures_before_content_are_retried_transparently(keel_emulator: Emulator, spec: str, side: Side) -> None:
    keel_emulator.inject(spec, limit=2)
    got = stream_on(side, keel_emulator, model="claude-opus-5", max_tokens=500, messages=ask(LONG))
    assert "".join(got.pieces) == full_text(keel_emulator, "claude-opus-5")
    served = keel_emulator.access_log.entries()[:-1]
    assert [e.fault for e in served[:2]] == [spec] * 2  # the two failed attempts, as injected
    assert got.stream.reply is not None
    record = got.stream.reply.record
    assert record.attempts == 3 and record.rounds == 1 and record.retries == 2  # one round, three attempts


def test_interruption_after_content_raises_with_the_partial_text(keel_emulator: Emulator, side: Side) -> None:
    got = stream_on(
        side,
        keel_emulator,
        model="claude-opus-5",
        max_tokens=500,
        messages=ask(LONG),
        extra_headers=fault("stream_error_after=13"),
    )
    err = got.error
    assert isinstance(err, StreamInterrupted)
    assert err.partial_text == "".join(got.pieces) and len(got.pieces) == 10  # 3 framing events, then 10 deltas
    assert full_text(keel_emulator, "claude-opus-5").startswith(err.partial_text)
    assert err.request_id == keel_emulator.access_log.entries()[0].request_id
    assert err.error_class.name == "mid_stream"
    assert len(keel_emulator.access_log.entries()) == 2  # the failed stream and the reference call; no retry


def test_a_dropped_stream_after_content_is_an_interruption_not_a_short_answer(
    keel_emulator: Emulator, side: Side
) -> None:
    got = stream_on(
        side,
        keel_emulator,
        read="until_done",
        model="claude-opus-5",
        max_tokens=500,
        messages=ask(LONG),
        extra_headers=fault("drop_after=9"),
    )
    assert isinstance(got.error, StreamInterrupted)
    assert got.error.error_class.name == "stream_interrupted"
    assert len(got.error.partial_text.split()) == 6


@pytest.mark.parametrize("model", ["claude-opus-5", "claude-sonnet-4-6", "claude-haiku-4-5"])
@pytest.mark.parametrize("spec", ["stream_error_after=13", "drop_after=20"])
def test_continue_stitches_without_duplicate_or_gap(keel_emulator: Emulator, model: str, spec: str, side: Side) -> None:
    keel_emulator.inject(spec, limit=1)
    got = stream_on(side, keel_emulator, model=model, max_tokens=500, messages=ask(LONG), on_interrupt="continue")
    reference = keel_client(keel_emulator).messages.create(model=model, max_tokens=500, messages=ask(LONG))
    assert got.final is not None
    assert "".join(got.pieces) == reference.text == got.final.content[0].text
    assert got.final.stop_reason == "end_turn"
    assert got.stream.reply is not None and got.stream.reply.record.rounds == 2
    assert got.stream.reply.record.attempts == 2 and got.stream.reply.record.retries == 0
    # both rounds' input is counted; the broken round's output is what it reported before the break
    assert got.final.usage.input_tokens > 2 * reference.message.usage.input_tokens
    assert supports_prefill(model) == (model == "claude-haiku-4-5")


def test_an_unfinished_tool_call_is_not_resumed_partially(keel_emulator: Emulator, side: Side) -> None:
    tools = [
        {
            "name": "lookup",
            "input_schema": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "region": {"type": "string"}},
                "required": ["query", "region"],
            },
        }
    ]
    prompt = ask("find it [[keel:tool=lookup]]")
    reference = keel_client(keel_emulator).messages.create(
        model="claude-opus-5", max_tokens=500, messages=prompt, tools=tools
    )
    # events: start, block 0 start, ping, 10 text deltas, block 0 stop, block 1 start, then tool input: cut there
    keel_emulator.inject("stream_error_after=17", limit=1)
    got = stream_on(
        side,
        keel_emulator,
        model="claude-opus-5",
        max_tokens=500,
        messages=prompt,
        tools=tools,
        on_interrupt="continue",
    )
    final = got.final
    assert final is not None
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == reference.message.content[0].text
    assert final.content[1].input == reference.message.content[1].input  # whole, from the continuation, not a fragment
    assert final.stop_reason == "tool_use"


def test_retries_before_content_are_bounded_by_the_policy(keel_emulator: Emulator, side: Side) -> None:
    keel_emulator.inject("drop_after=1")
    got = stream_on(
        side,
        keel_emulator,
        read="until_done",
        options={"policy": RetryPolicy("fast", max_retries=2, timeout=5.0, deadline=5.0)},
        model="claude-opus-5",
        max_tokens=100,
        messages=ask(LONG),
    )
    assert isinstance(got.error, CallFailed)
    assert got.error.error_class.name == "stream_interrupted"
    assert got.error.record.attempts == 3 == len(keel_emulator.access_log.entries())


def test_background_streams_ride_out_errors_that_keep_them_from_opening(keel_emulator: Emulator, side: Side) -> None:
    keel_emulator.inject("status=529; retry_after_ms=1", limit=4)  # more than the SDK's own retries
    background = RetryPolicy("quick-background", max_retries=1, timeout=5.0, budget=10.0, backoff_base=0.01)
    got = stream_on(
        side, keel_emulator, options={"policy": background}, model="claude-opus-5", max_tokens=500, messages=ask(LONG)
    )
    assert got.error is None and "".join(got.pieces) == full_text(keel_emulator, "claude-opus-5")
    assert [e.status for e in keel_emulator.access_log.entries()[:5]] == [529, 529, 529, 529, 200]
    assert got.stream.reply is not None
    record = got.stream.reply.record
    assert record.attempts == 5 and record.rounds == 1
    assert record.request_id == keel_emulator.access_log.entries()[4].request_id


def test_errors_before_the_stream_starts_are_classified(keel_emulator: Emulator, side: Side) -> None:
    got = stream_on(
        side,
        keel_emulator,
        read="until_done",
        model="claude-opus-5",
        max_tokens=100,
        messages=ask("x"),
        extra_headers=fault("status=401"),
    )
    assert isinstance(got.error, CallFailed)
    assert got.error.error_class.name == "authentication"
    assert isinstance(got.error.sdk_error, anthropic.AuthenticationError)
    assert got.error.request_id == keel_emulator.access_log.entries()[0].request_id


def test_events_pass_through_like_the_sdk(keel_emulator: Emulator, side: Side) -> None:
    got = stream_on(
        side, keel_emulator, read="events", model="claude-opus-5", max_tokens=100, messages=ask("x [[keel:words=5]]")
    )
    kinds = got.pieces
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("text") == 5 and kinds.count("content_block_delta") == 5


def test_a_stream_left_early_still_leaves_its_records(keel_emulator: Emulator, tmp_path: Path, side: Side) -> None:
    from keel import read_records

    got = stream_on(
        side,
        keel_emulator,
        stop_after=5,  # the caller has seen enough
        options={"records": tmp_path / "records.jsonl"},
        model="claude-opus-5",
        max_tokens=500,
        messages=ask(LONG),
    )
    assert got.final is None and len(got.pieces) == 5
    records = read_records(tmp_path / "records.jsonl")
    call = next(r for r in records if r["kind"] == "call")
    assert call["outcome"] == "abandoned" and call["error_class"] is None
    assert call["request_id"] == keel_emulator.access_log.entries()[0].request_id == got.stream.request_id
    assert call["usage"]["input_tokens"] > 0 and call["cost_usd"] is not None
    assert [r["kind"] for r in records] == ["attempt", "call"]
