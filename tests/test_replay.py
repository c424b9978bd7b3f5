"""The emulator replaying a cassette: matching, repeats in order, misses, recorded timing, faults layered on top."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from typer.testing import CliRunner

from keel.cli import app as cli_app
from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, EmulatorTransport, client
from keel.emulator.cassette import CassetteWriter, Event, Exchange, canonical_body, read_cassette

MODEL = "claude-haiku-5-5"
REQUEST = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def message(text: str) -> dict[str, Any]:
    usage = {"input_tokens": 3, "output_tokens": 2, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "id": "msg_01RecordedRecordedRecorded",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "container": None,
        "usage": usage,
    }


def answer(text: str, request: dict[str, Any] | None = None, **changes: Any) -> Exchange:
    headers = {
        "content-type": "application/json",
        "request-id": f"req_011CRecorded{len(text):012d}",
        "anthropic-ratelimit-requests-limit": "4000",
    }
    fields: dict[str, Any] = {"status": 200, "headers": headers, "body": message(text), "head_ms": 5.0, "done_ms": 6.0}
    return Exchange("POST", "/v1/messages", "", canonical_body(request or REQUEST), **{**fields, **changes})


def stream(offsets: list[float]) -> Exchange:
    start = {"type": "message_start", "message": {**message(""), "content": [], "stop_reason": None}}
    events = [Event(offsets[0], "message_start", start)]
    events.append(
        Event(
            offsets[0],
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    for n, at in enumerate(offsets[1:]):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" w{n}"}}
        events.append(Event(at, "content_block_delta", delta))
    last = offsets[-1]
    events += [
        Event(last, "content_block_stop", {"type": "content_block_stop", "index": 0}),
        Event(
            last,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(offsets) - 1},
            },
        ),
        Event(last, "message_stop", {"type": "message_stop"}),
    ]
    headers = {"content-type": "text/event-stream; charset=utf-8", "request-id": "req_011CRecordedStream0000000"}
    return Exchange(
        "POST",
        "/v1/messages",
        "",
        canonical_body({**REQUEST, "stream": True}),
        200,
        headers,
        events=events,
        head_ms=offsets[0],
    )


def cassette(tmp_path: Path, *exchanges: Exchange) -> Path:
    path = tmp_path / "replay.jsonl"
    writer = CassetteWriter(path, upstream="https://api.anthropic.com")
    for exchange in exchanges:
        writer.write(exchange)
    writer.close()
    return path


def replaying(path: Path, **config: Any) -> tuple[Emulator, anthropic.Anthropic]:
    emulator = Emulator(EmulatorConfig(replay=path, **{"replay_speed": math.inf, **config}))
    return emulator, client(emulator, _strict_response_validation=True, max_retries=2)


def test_a_recorded_request_gets_its_recorded_answer(tmp_path: Path) -> None:
    emulator, sdk = replaying(cassette(tmp_path, answer("recorded answer")))
    reordered = {"messages": REQUEST["messages"], "max_tokens": 50, "model": MODEL, "metadata": {"user_id": "u-9"}}
    reply = sdk.messages.with_raw_response.create(**reordered)  # key order and metadata do not matter
    assert reply.parse().content[0].text == "recorded answer"  # type: ignore[union-attr]
    assert reply.request_id == "req_011CRecorded000000000015"
    assert reply.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert emulator.access_log.entries()[-1].request_id == reply.request_id


def test_repeats_are_answered_in_recorded_order_then_the_last_again(tmp_path: Path) -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_1"}
    headers = {"content-type": "application/json", "request-id": "req_1", "retry-after-ms": "1"}
    overloaded = answer("x", status=529, headers=headers, body=error)
    _, sdk = replaying(cassette(tmp_path, overloaded, answer("first"), answer("second")))
    texts = [sdk.messages.create(**REQUEST).content[0].text for _ in range(3)]  # type: ignore[union-attr]
    assert texts == ["first", "second", "second"]  # the recorded 529 was retried by the SDK, as it was when recorded


def test_ignored_fields_are_configurable(tmp_path: Path) -> None:
    _, sdk = replaying(cassette(tmp_path, answer("any budget")), replay_ignore=("max_tokens",), on_miss="error")
    assert sdk.messages.create(**{**REQUEST, "max_tokens": 999}).content[0].text == "any budget"  # type: ignore[union-attr]
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(**{**REQUEST, "metadata": {"user_id": "u"}})  # no longer ignored


def test_a_miss_is_generated_or_a_404_naming_the_closest_recorded_request(tmp_path: Path) -> None:
    path = cassette(tmp_path, answer("recorded"), answer("other", {**REQUEST, "system": "be brief"}))
    _, generating = replaying(path)
    assert (
        generating.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "hello"}]}).stop_reason
        == "end_turn"
    )
    _, strict = replaying(path, on_miss="error")
    with pytest.raises(anthropic.NotFoundError) as caught:
        strict.messages.create(**{**REQUEST, "messages": [{"role": "user", "content": "hello"}]})
    assert caught.value.type == "not_found_error"
    assert f"no exchange in {path} matches POST /v1/messages" in caught.value.message
    closest = "closest recorded request is POST /v1/messages (line 2), which differs at messages.0.content"
    assert f'{closest}: recorded "hi", sent "hello"' in caught.value.message
    with pytest.raises(anthropic.NotFoundError, match=r"is POST /v1/messages \(line 2\), on another route"):
        strict.messages.count_tokens(model=MODEL, messages=REQUEST["messages"])  # type: ignore[arg-type]


def arrivals(emulator: Emulator) -> list[float]:
    """When each SSE event of the replayed stream reached a plain reader, in ms from the request."""
    seen = []
    with httpx2.Client(transport=EmulatorTransport(emulator), base_url="http://emulator") as http:
        started = time.perf_counter()
        headers = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
        with http.stream("POST", "/v1/messages", json={**REQUEST, "stream": True}, headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    seen.append((time.perf_counter() - started) * 1000)
    return seen


def test_a_stream_is_replayed_on_its_recorded_timing_scaled(tmp_path: Path) -> None:
    offsets = [40.0, 100.0, 160.0, 220.0, 280.0]
    path = cassette(tmp_path, stream(offsets))
    recorded = [event.at_ms for event in read_cassette(path).exchanges[0].events or []]
    for speed in (1.0, 2.0):
        emulator = Emulator(EmulatorConfig(replay=path, replay_speed=speed))
        got = arrivals(emulator)
        assert len(got) == len(recorded)
        for at, want in zip(got, recorded, strict=True):
            assert want / speed - 5 <= at <= want / speed + 75, (speed, got)  # never early; late only by load
    fast = arrivals(Emulator(EmulatorConfig(replay=path, replay_speed=math.inf)))
    assert fast[-1] < 40


def test_faults_are_layered_on_a_replay(tmp_path: Path) -> None:
    emulator, sdk = replaying(cassette(tmp_path, stream([1.0, 2.0, 3.0, 4.0]), answer("ok")))
    cut = {"x-keel-fault": "stream_error_after=3"}
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(**REQUEST, extra_headers=cut) as replayed,
    ):
        list(replayed.text_stream)
    assert caught.value.type == "overloaded_error"
    emulator.inject("status=529; retry_after_ms=1", limit=1)
    assert sdk.messages.create(**REQUEST).content[0].text == "ok"  # type: ignore[union-attr]
    assert [e.status for e in emulator.access_log.entries()][-2:] == [529, 200]


def test_batch_results_urls_point_at_the_replaying_emulator(tmp_path: Path) -> None:
    batch = {
        "id": "msgbatch_01R",
        "type": "message_batch",
        "processing_status": "ended",
        "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_01R/results",
    }
    recorded = Exchange(
        "GET", "/v1/messages/batches/msgbatch_01R", "", None, 200, {"content-type": "application/json"}, body=batch
    )
    _, sdk = replaying(cassette(tmp_path, recorded))
    raw = sdk.messages.batches.with_raw_response.retrieve("msgbatch_01R")
    assert (
        raw.http_response.json()["results_url"]
        == "http://emulator.keel.invalid/v1/messages/batches/msgbatch_01R/results"
    )


def test_serve_refuses_a_bad_cassette_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"keel_cassette": 1}\n{"method": "POST", "pa')
    result = CliRunner().invoke(cli_app, ["emulator", "serve", "--replay", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2: the line is cut short" in result.output
