"""The emulator's SSE checked against facts observed in real API recordings (tests/fixtures/sse_recordings.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorTransport

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REAL: dict[str, Any] = json.loads((FIXTURES / "sse_recordings.json").read_text())
REAL_STREAM_HEADERS: dict[str, str] = json.loads((FIXTURES / "response_headers.json").read_text())["stream"]["headers"]
REQUEST_ID = re.compile(r"req_011C[0-9A-Za-z]{20}")
Event = tuple[str, dict[str, Any]]


def parse_sse(text: str) -> list[Event]:
    events = []
    for chunk in re.split(r"\n\n+", text.strip()):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def emulator_stream(content: str, **extra: Any) -> tuple[httpx2.Response, str]:
    body = {"model": "claude-sonnet-5-5", "max_tokens": 300, "stream": True, **extra}
    body["messages"] = [{"role": "user", "content": content}]
    with httpx2.Client(transport=EmulatorTransport(Emulator()), base_url="http://emulator") as http:
        response = http.post(
            "/v1/messages", json=body, headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
        )
        return response, response.text


def event_order(events: list[Event]) -> list[str]:
    """Event names in order, consecutive content_block_delta folded into 'content_block_delta+' as in the fixture."""
    order: list[str] = []
    for name, _ in events:
        folded = "content_block_delta+" if name == "content_block_delta" else name
        if not (order and folded == order[-1] == "content_block_delta+"):
            order.append(folded)
    return order


def first(events: list[Event], name: str) -> dict[str, Any]:
    return next(data for n, data in events if n == name)


def test_text_stream_matches_the_basic_recording() -> None:
    real = REAL["basic"]
    _, text = emulator_stream("Hello [[keel:reply=Hello there!]]")
    ours = parse_sse(text)
    assert event_order(ours) == real["event_order"]
    assert [data["type"] for _, data in ours] == [name for name, _ in ours]
    assert text.count(f"event: ping\ndata: {real['ping_data']}\n\n") == 1
    assert {d["delta"]["type"] for n, d in ours if n == "content_block_delta"} == {real["delta_type"]}
    assert "".join(d["delta"]["text"] for n, d in ours if n == "content_block_delta") == "Hello there!"


def test_stream_headers_match_the_recorded_ones() -> None:
    response, _ = emulator_stream("Hello [[keel:reply=Hello there!]]")
    assert response.headers["content-type"] == REAL_STREAM_HEADERS["Content-Type"]
    assert response.headers["cache-control"] == REAL_STREAM_HEADERS["Cache-Control"]
    assert REQUEST_ID.fullmatch(REAL_STREAM_HEADERS["Request-Id"])
    assert REQUEST_ID.fullmatch(response.headers["request-id"])


def test_event_payload_keys_match_the_tool_use_recording() -> None:
    real = REAL["tool_use"]
    _, text = emulator_stream("Weather? [[keel:tool=get_weather]]", tools=[WEATHER])
    ours = parse_sse(text)
    assert event_order(ours) == real["event_order"]
    for name, keys in real["payload_keys"].items():
        assert set(first(ours, name)) == set(keys), name
    ours_start = first(ours, "message_start")["message"]
    assert set(ours_start) == set(real["message_keys"])
    assert set(real["message_start_usage_keys"]) <= set(ours_start["usage"])
    assert ours_start["usage"]["output_tokens"] == 1 and ours_start["stop_reason"] is None
    ours_tool = [d["content_block"] for n, d in ours if n == "content_block_start"][-1]
    assert set(ours_tool) == set(real["tool_use_block_keys"])
    ours_json = [d["delta"] for n, d in ours if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    assert ours_json[0] == real["first_input_json_delta"]
    assert json.loads("".join(d["partial_json"] for d in ours_json)) == {"city": "example city"}
    ours_delta = first(ours, "message_delta")
    assert set(ours_delta["delta"]) == set(real["message_delta_delta_keys"])
    assert set(ours_delta["usage"]) == set(real["message_delta_usage_keys"])


def test_refusal_delta_carries_stop_details_like_the_recording() -> None:
    real_delta = REAL["refusal"]["message_delta_delta"]
    _, text = emulator_stream("[[keel:refuse=cyber]]")
    ours_delta = first(parse_sse(text), "message_delta")["delta"]
    assert set(ours_delta) == set(real_delta)
    assert set(ours_delta["stop_details"]) == set(real_delta["stop_details"])
    assert ours_delta["stop_reason"] == real_delta["stop_reason"]
    assert ours_delta["stop_details"]["type"] == real_delta["stop_details"]["type"]
    assert ours_delta["stop_details"]["category"] == "cyber"


def test_max_tokens_in_a_tool_input_stops_like_the_partial_json_recording() -> None:
    real = REAL["incomplete_partial_json"]
    _, text = emulator_stream("x [[keel:tool=get_weather]]", tools=[WEATHER], max_tokens=12)
    ours = parse_sse(text)
    assert event_order(ours) == real["event_order"]  # the cut tool block is never closed with content_block_stop
    assert first(ours, "message_delta")["delta"]["stop_reason"] == real["stop_reason"]
    assert [n for n, _ in ours][-2:] == ["message_delta", "message_stop"]


WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
