"""The emulator's SSE checked against real recordings in ../shared/reference/recordings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorTransport

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "recordings"
Event = tuple[str, dict[str, Any]]


def parse_sse(text: str) -> list[Event]:
    events = []
    for chunk in re.split(r"\n\n+", text.strip()):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def recording(name: str) -> list[Event]:
    path = RECORDINGS / name
    if not path.exists():
        pytest.fail(f"missing recording {path}: ../shared must sit beside the repository")
    return parse_sse(path.read_text())


def emulator_stream(content: str, **extra: Any) -> tuple[httpx2.Response, str]:
    body = {"model": "claude-sonnet-5-5", "max_tokens": 300, "stream": True, **extra}
    body["messages"] = [{"role": "user", "content": content}]
    with httpx2.Client(transport=EmulatorTransport(Emulator()), base_url="http://emulator") as http:
        response = http.post(
            "/v1/messages", json=body, headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
        )
        return response, response.text


def shape(events: list[Event]) -> str:
    """The event order as a string, with content deltas folded: 'message_start block_start ping delta+ ...'."""
    names = [name.replace("content_block_", "block_") for name, _ in events]
    return re.sub(r"(block_delta )+", "block_delta+ ", " ".join(names) + " ")


def test_text_stream_matches_the_basic_recording() -> None:
    response, text = emulator_stream("Hello [[keel:reply=Hello there!]]")
    ours, real = parse_sse(text), recording("sse-basic_response.txt")
    assert shape(ours) == shape(real)
    assert [data["type"] for _, data in ours] == [name for name, _ in ours]
    assert text.count('event: ping\ndata: {"type": "ping"}\n\n') == 1
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r"req_011C[0-9A-Za-z]{20}", response.headers["request-id"])
    assert "".join(d["delta"]["text"] for n, d in ours if n == "content_block_delta") == "Hello there!"


def _keys(events: list[Event], name: str) -> set[str]:
    return set(next(data for n, data in events if n == name))


def test_event_payload_keys_match_the_recordings() -> None:
    _, text = emulator_stream("Weather? [[keel:tool=get_weather]]", tools=[WEATHER])
    ours, real = parse_sse(text), recording("sse-tool_use_response.txt")
    assert shape(ours) == shape(real)
    for name in ("message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta"):
        assert _keys(ours, name) == _keys(real, name), name
    ours_start = next(d for n, d in ours if n == "message_start")["message"]
    real_start = next(d for n, d in real if n == "message_start")["message"]
    assert set(ours_start) == set(real_start)
    assert set(real_start["usage"]) <= set(ours_start["usage"])
    assert ours_start["usage"]["output_tokens"] == 1 and ours_start["stop_reason"] is None
    ours_tool = [d["content_block"] for n, d in ours if n == "content_block_start"][-1]
    real_tool = [d["content_block"] for n, d in real if n == "content_block_start"][-1]
    assert set(ours_tool) == set(real_tool)
    ours_json = [d["delta"] for n, d in ours if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
    assert ours_json[0] == {"type": "input_json_delta", "partial_json": ""}
    assert json.loads("".join(d["partial_json"] for d in ours_json)) == {"city": "example city"}
    real_delta = next(d for n, d in real if n == "message_delta")
    ours_delta = next(d for n, d in ours if n == "message_delta")
    assert set(ours_delta["delta"]) == set(real_delta["delta"]) and set(ours_delta["usage"]) == set(real_delta["usage"])


def test_refusal_delta_carries_stop_details_like_the_recording() -> None:
    _, text = emulator_stream("[[keel:refuse=cyber]]")
    ours, real = parse_sse(text), recording("sse-refusal_response.txt")
    ours_delta = next(d for n, d in ours if n == "message_delta")["delta"]
    real_delta = next(d for n, d in real if n == "message_delta")["delta"]
    assert set(ours_delta) == set(real_delta)
    assert set(ours_delta["stop_details"]) == set(real_delta["stop_details"])
    assert ours_delta["stop_details"]["category"] == "cyber"


def test_max_tokens_in_a_tool_input_stops_like_the_partial_json_recording() -> None:
    _, text = emulator_stream("x [[keel:tool=get_weather]]", tools=[WEATHER], max_tokens=12)
    ours, real = parse_sse(text), recording("sse-incomplete_partial_json_response.txt")
    assert shape(ours) == shape(real)  # the cut tool block is never closed with content_block_stop
    final = next(d for n, d in ours if n == "message_delta")
    assert final["delta"]["stop_reason"] == next(d for n, d in real if n == "message_delta")["delta"]["stop_reason"]
    assert [n for n, _ in ours][-2:] == ["message_delta", "message_stop"]


WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
