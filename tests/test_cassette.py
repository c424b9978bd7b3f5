"""Cassette files: what a line holds, what is scrubbed before it is written, and how a bad file is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from keel_helpers import canary_key

from keel.emulator.cassette import (
    FORMAT,
    SCRUBBED,
    CassetteError,
    CassetteWriter,
    Event,
    Exchange,
    kept_headers,
    read_cassette,
    scrub,
    scrub_stream,
)

CANARY = canary_key("cassette")


def exchange(**changes: Any) -> Exchange:
    fields: dict[str, Any] = {
        "method": "POST",
        "path": "/v1/messages",
        "query": "",
        "request": {"max_tokens": 10, "messages": [{"content": "hi", "role": "user"}], "model": "claude-haiku-5-5"},
        "status": 200,
        "headers": {"content-type": "application/json", "request-id": "req_011CAAAAAAAAAAAAAAAAAAAA"},
        "body": {"type": "message", "content": []},
        "head_ms": 12.34,
        "done_ms": 15.0,
    }
    return Exchange(**{**fields, **changes})


def test_a_cassette_is_a_header_then_one_exchange_a_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    writer = CassetteWriter(path, upstream="https://api.anthropic.com")
    stream = exchange(
        body=None,
        events=[Event(20.5, "message_start", {"type": "message_start"}), Event(21, "x", "not json", raw=True)],
    )
    writer.write(exchange())
    writer.write(stream)
    writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    header = json.loads(lines[0])
    assert (
        header["keel_cassette"] == FORMAT
        and header["upstream"] == "https://api.anthropic.com"
        and header["keel_version"]
    )
    assert json.loads(lines[2])["events"] == [
        {"t": 20.5, "event": "message_start", "data": {"type": "message_start"}},
        {"t": 21, "event": "x", "raw": "not json"},
    ]
    cassette = read_cassette(path)
    assert cassette.exchanges == (exchange(head_ms=12.3), replace(stream, head_ms=12.3))  # ms kept to a tenth
    assert [e.line for e in cassette.exchanges] == [2, 3]
    assert cassette.exchanges[1].events[1].wire() == b"event: x\ndata: not json\n\n"  # type: ignore[index]


def test_writing_again_adds_to_the_cassette_and_fresh_starts_it_over(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    for _ in range(2):
        writer = CassetteWriter(path)
        writer.write(exchange())
        writer.close()
    assert len(read_cassette(path).exchanges) == 2
    CassetteWriter(path, fresh=True).close()
    assert read_cassette(path).exchanges == ()


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    own_key = "my-own-proxy-key-0042"  # the client's key, whatever its form: scrubbed because the caller names it
    request = {
        "model": "claude-haiku-5-5",
        "messages": [{"role": "user", "content": f"my key is {CANARY}, and {own_key}"}],
        "metadata": {"user_id": "u1", "api_key": "anything"},
        "tools": [
            {"name": "login", "input_schema": {"type": "object", "properties": {"password": {"type": "string"}}}}
        ],
    }
    headers = kept_headers([("Request-Id", "req_1"), ("X-Api-Key", CANARY), ("Authorization", f"Bearer {CANARY}")])
    events = [Event(1.0, "content_block_delta", {"delta": {"text": f"echo {CANARY}"}})]
    writer = CassetteWriter(tmp_path / "c.jsonl")
    writer.write(exchange(request=request, headers=headers, body={"echo": own_key}), secrets=(own_key,))
    writer.write(exchange(body=None, events=events))
    writer.close()
    text = (tmp_path / "c.jsonl").read_text()
    assert CANARY not in text and own_key not in text and "sk-ant-" not in text
    assert headers == {"request-id": "req_1"}  # credential headers are never kept at all
    recorded = read_cassette(tmp_path / "c.jsonl").exchanges[0]
    assert recorded.request["metadata"] == {"user_id": "u1", "api_key": SCRUBBED}
    assert recorded.request["tools"][0]["input_schema"]["properties"]["password"] == SCRUBBED
    assert recorded.request["messages"][0]["content"] == f"my key is {SCRUBBED}, and {SCRUBBED}"


def test_a_secret_split_across_stream_deltas_is_scrubbed_too() -> None:
    pieces = ["Your key: sk", "-ant-api03", "-CANARY0123456789", "abc", " is safe", " with my-own-secret-42", "!"]
    events = [
        Event(n, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        for n, piece in enumerate(pieces)
    ]
    events.append(Event(9, "message_stop", {"type": "message_stop"}))
    scrubbed = scrub_stream(events, secrets=("my-own-secret-42",))
    texts = [e.data["delta"]["text"] for e in scrubbed[:-1]]
    assert "".join(texts) == f"Your key: {SCRUBBED} is safe with {SCRUBBED}!"
    assert texts[:4] == ["Your key: " + SCRUBBED, "", "", ""] and scrubbed[-1] == events[-1]
    untouched = [Event(0, "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "sk-ant"}})]
    assert scrub_stream(untouched) == untouched  # too short to be a key


def test_scrub_leaves_everything_else_alone() -> None:
    value = {"max_tokens": 5, "usage": {"input_tokens": 3}, "text": "sk-ant is not a key", "list": [1, None, True]}
    assert scrub(value) == value


def write(path: Path, *lines: Any, end: str = "\n") -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + end)
    return path


HEADER = {"keel_cassette": 1, "keel_version": "0.0.1"}


@pytest.mark.parametrize(
    ("lines", "end", "message"),
    [
        ([HEADER, exchange().to_json(), '{"method": "POST", "pa'], "", r"c\.jsonl:3: the line is cut short"),
        ([HEADER, "{not json", exchange().to_json()], "\n", r"c\.jsonl:2: not valid JSON"),
        ([exchange().to_json()], "\n", r"c\.jsonl:1: not a keel cassette"),
        ([], "", r"c\.jsonl:1: empty file"),
        ([HEADER, {**exchange().to_json(), "status": "200"}], "\n", r"c\.jsonl:2: 'status' must be a whole number"),
        ([HEADER, {**exchange().to_json(), "status": 99}], "\n", r"c\.jsonl:2: 'status' must be"),
        ([HEADER, {k: v for k, v in exchange().to_json().items() if k != "body"}], "\n", r":2: .*'body' or 'events'"),
        ([HEADER, {**exchange().to_json(), "events": [{"t": "soon", "event": "x", "data": 1}]}], "\n", r":2: event 0"),
        ([{"keel_cassette": "1"}], "\n", r":1: keel_cassette must be a format number"),
    ],
)
def test_a_bad_cassette_is_refused_at_start_with_file_and_line(
    tmp_path: Path, lines: list[Any], end: str, message: str
) -> None:
    path = write(tmp_path / "c.jsonl", *lines, end=end) if lines else tmp_path / "c.jsonl"
    path.touch()
    with pytest.raises(CassetteError, match=message):
        read_cassette(path)


def test_another_keel_versions_cassette_is_read_when_its_format_is_known(tmp_path: Path) -> None:
    old = write(tmp_path / "old.jsonl", {"keel_cassette": 1, "keel_version": "0.0.1"}, exchange().to_json())
    assert len(read_cassette(old).exchanges) == 1
    newer = write(tmp_path / "new.jsonl", {"keel_cassette": FORMAT + 1, "keel_version": "9.0.0"}, "{}")
    with pytest.raises(CassetteError, match=rf"cassette format {FORMAT + 1} \(written by keel 9\.0\.0\) is newer"):
        read_cassette(newer)
    with pytest.raises(CassetteError, match="is newer"):
        CassetteWriter(newer)  # nor is anything added to it


def test_a_missing_cassette_says_so(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match=r"nope\.jsonl: cannot read the cassette"):
        read_cassette(tmp_path / "nope.jsonl")
