"""Recording through `keel proxy` and replaying the cassette: the same answers, the same events in the same order on the
recorded timing, secrets never on disk; what a fault, the client or a shutdown cut short is never recorded."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from keel_helpers import canary_key
from proxy_helpers import MODEL, ask, proxied, sse_events

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, client
from keel.emulator.cassette import read_cassette
from keel.emulator.server import BackgroundServer, free_port
from keel.proxy import BackgroundProxy, Proxy, ProxyConfig

CANARY = canary_key("proxy")
HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
STREAM = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": ask("Tell me [[keel:words=12]]")}


def timed_events(base_url: str, key: str = DEFAULT_API_KEY) -> tuple[list[tuple[str, Any]], list[float]]:
    """A stream read by plain httpx2: its events, and when each arrived (ms from the request)."""
    arrivals, chunks = [], []
    with httpx2.Client(base_url=base_url, headers={**HEADERS, "x-api-key": key}) as http:
        started = time.perf_counter()
        with http.stream("POST", "/v1/messages", json=STREAM) as response:
            for line in response.iter_lines():
                chunks.append(line)
                if line.startswith("event:"):
                    arrivals.append((time.perf_counter() - started) * 1000)
    return sse_events("\n".join(chunks)), arrivals


def test_record_then_replay_gives_the_same_answers_events_and_timing(tmp_path: Path) -> None:
    cassette = tmp_path / "session.jsonl"
    with proxied(EmulatorConfig(tps=80, batch_speed=3600), record=cassette) as setup:  # 12.5 ms a token upstream
        with setup.sdk() as sdk:
            created = sdk.messages.create(model=MODEL, max_tokens=50, messages=ask("Hello"))
            counted = sdk.messages.count_tokens(model=MODEL, messages=ask("Hello"))
            models = sdk.models.list(limit=3)
            batch = sdk.messages.batches.create(
                requests=[{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 20, "messages": ask("x")}}]
            )
            setup.emulator.batches.advance(3600)
            results = [line.to_dict() for line in sdk.messages.batches.results(batch.id)]
        recorded_events, recorded_arrivals = timed_events(setup.url)
    assert all(entry.recorded for entry in setup.proxy.log.entries())
    exchanges = read_cassette(cassette).exchanges
    assert [f"{e.method} {e.path}" for e in exchanges] == [
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "GET /v1/models",
        "POST /v1/messages/batches",
        f"GET /v1/messages/batches/{batch.id}",
        f"GET /v1/messages/batches/{batch.id}/results",
        "POST /v1/messages",
    ]
    assert exchanges[-1].is_stream and exchanges[2].query == "limit=3"

    replay = Emulator(EmulatorConfig(replay=cassette, on_miss="error"))
    with client(replay, _strict_response_validation=True) as sdk:
        assert sdk.messages.create(model=MODEL, max_tokens=50, messages=ask("Hello")) == created
        assert sdk.messages.count_tokens(model=MODEL, messages=ask("Hello")) == counted
        assert sdk.models.list(limit=3).data == models.data
        assert [line.to_dict() for line in sdk.messages.batches.results(batch.id)] == results
    with BackgroundServer(replay) as server:
        replayed_events, replayed_arrivals = timed_events(server.base_url)
    assert replayed_events == recorded_events  # the same events, in the same order, ids included
    recorded_at = [event.at_ms for event in exchanges[-1].events or []]
    assert recorded_at[-1] - recorded_at[0] > 100  # the upstream's pace was recorded
    for at, want in zip(replayed_arrivals, recorded_at, strict=True):
        assert want - 5 <= at <= want + 75, (replayed_arrivals, recorded_at)
    assert abs(replayed_arrivals[-1] - recorded_arrivals[-1]) < 100


def test_a_canary_key_never_reaches_the_cassette(tmp_path: Path) -> None:
    cassette, log = tmp_path / "c.jsonl", tmp_path / "access.jsonl"
    with proxied(EmulatorConfig(api_key=None), record=cassette, access_log=log) as setup:
        with setup.sdk(api_key=CANARY) as sdk:
            sdk.messages.create(
                model=MODEL,
                max_tokens=60,
                messages=ask(f"Repeat after me: [[keel:reply=my key is {CANARY}]]"),
                metadata={"user_id": CANARY},
            )
            with sdk.messages.stream(model=MODEL, max_tokens=60, messages=ask(f"[[keel:reply={CANARY}]]")) as stream:
                assert CANARY in stream.get_final_text()  # the client did get it: only the records lose it
            with pytest.raises(anthropic.BadRequestError) as caught:  # an upstream error quoting the request
                sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"), extra_body={CANARY: 1})
            assert CANARY in caught.value.message
        own_key = "plain-key-without-the-pattern-7731"
        with httpx2.Client(base_url=setup.url) as http:
            http.post(
                "/v1/messages",
                json={"model": MODEL, "max_tokens": 20, "messages": ask(f"[[keel:reply={own_key}]]")},
                headers={"authorization": f"Bearer {own_key}", "anthropic-version": "2023-06-01"},
            )
    text = cassette.read_text()
    assert len(read_cassette(cassette).exchanges) == 4
    assert CANARY not in text and "CANARYkey" not in text and own_key not in text
    assert CANARY not in log.read_text() and own_key not in log.read_text()


def test_injected_faults_and_cut_streams_are_not_recorded_but_the_upstreams_own_errors_are(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    upstream = EmulatorConfig()
    with proxied(upstream, record=cassette) as setup, setup.sdk(max_retries=2) as sdk:
        setup.emulator.inject("status=529; retry_after_ms=1", limit=1)  # the upstream's own 529: recorded
        sdk.messages.create(model=MODEL, max_tokens=20, messages=ask("[[keel:reply=after a 529]]"))
        sdk.messages.create(
            model=MODEL,
            max_tokens=20,
            messages=ask("hi"),
            extra_headers={"x-keel-fault": "status=500; times=1; retry_after_ms=1"},
        )
        # a stream a fault cut short, then one that ended before the fault's event 40: it went through whole
        for words, fault, stop_reason in ((20, "drop_after=4", None), (5, "stream_error_after=40", "end_turn")):
            prompt = ask(f"[[keel:words={words}]]")
            with sdk.messages.stream(
                model=MODEL, max_tokens=50, messages=prompt, extra_headers={"x-keel-fault": fault}
            ) as s:
                assert s.get_final_message().stop_reason == stop_reason
    statuses = [(e.status, e.path) for e in read_cassette(cassette).exchanges]
    assert statuses == [(529, "/v1/messages"), (200, "/v1/messages"), (200, "/v1/messages"), (200, "/v1/messages")]
    assert [e.recorded for e in setup.proxy.log.entries()] == [True, True, False, True, False, True]

    replay = Emulator(EmulatorConfig(replay=cassette, on_miss="error"))
    with client(replay, max_retries=2) as sdk:
        reply = sdk.messages.create(model=MODEL, max_tokens=20, messages=ask("[[keel:reply=after a 529]]"))
    assert reply.content[0].type == "text" and reply.content[0].text == "after a 529"
    assert [entry.status for entry in replay.access_log.entries()] == [529, 200]  # replayed as it happened


def test_a_client_that_leaves_mid_stream_ends_the_upstream_stream_and_nothing_is_recorded(tmp_path: Path) -> None:
    with proxied(EmulatorConfig(tps=50), record=tmp_path / "c.jsonl") as setup:
        with httpx2.Client(base_url=setup.url, headers=HEADERS) as http:
            body = {**STREAM, "messages": ask("[[keel:words=200]]")}
            with http.stream("POST", "/v1/messages", json=body) as response:
                next(response.iter_lines())
        deadline = time.monotonic() + 5
        while not setup.proxy.log.entries() and time.monotonic() < deadline:
            time.sleep(0.02)
        entry = setup.proxy.log.entries()[0]
        assert entry.error == "the client went away" and not entry.recorded and entry.total_ms < 2000  # not 4 s
        with setup.sdk() as sdk:  # and the proxy goes on serving
            assert sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi")).stop_reason
    assert len(read_cassette(tmp_path / "c.jsonl").exchanges) == 1


async def _breaking_app(scope: Any, receive: Any, send: Any) -> None:
    """An upstream whose stream breaks off after two events (the connection is dropped)."""
    if scope["type"] != "http":
        return
    await receive()
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"request-id", b"req_011Cbroken")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(2):
        await send({"type": "http.response.body", "body": b'event: ping\ndata: {"type":"ping"}\n\n', "more_body": True})
    await asyncio.sleep(0.05)
    raise RuntimeError("the upstream fell over")


def test_an_upstream_that_breaks_off_a_stream_breaks_the_clients_off_too(tmp_path: Path) -> None:
    with BackgroundServer(_breaking_app) as upstream:
        proxy = Proxy(ProxyConfig(upstream=upstream.base_url, record=tmp_path / "c.jsonl"))
        with (
            BackgroundProxy(proxy) as server,
            httpx2.Client(base_url=server.base_url, headers=HEADERS) as http,
            pytest.raises(httpx2.RemoteProtocolError),
            http.stream("POST", "/v1/messages", json=STREAM) as response,
        ):
            for _ in response.iter_lines():
                pass
    entry = proxy.log.entries()[0]
    assert entry.request_id == "req_011Cbroken" and "broke off the stream" in (entry.error or "") and not entry.recorded


def test_ctrl_c_closes_streams_in_flight_properly_and_stops(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    with BackgroundServer(Emulator(EmulatorConfig(tps=20))) as upstream:
        port = free_port()
        command = [sys.executable, "-c", "from keel.cli import main; main()", "proxy", "--upstream", upstream.base_url]
        command += ["--port", str(port), "--record", str(cassette)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert f"keel proxy listening on http://127.0.0.1:{port}" in proc.stdout.readline()
            base_url = f"http://127.0.0.1:{port}"
            with anthropic.Anthropic(api_key=DEFAULT_API_KEY, base_url=base_url) as sdk:
                sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))  # recorded
                events: list[str] = []
                reader = threading.Thread(target=_read_stream, args=(base_url, events))
                reader.start()
                deadline = time.monotonic() + 10
                while "content_block_delta" not in events and time.monotonic() < deadline:
                    time.sleep(0.01)
                stopped = time.monotonic()
                proc.send_signal(signal.SIGINT)
                reader.join(timeout=10)
                out, err = proc.communicate(timeout=15)
        finally:
            proc.kill()
    assert proc.returncode == 0 and time.monotonic() - stopped < 5, err
    assert events[-1] == "error: api_error" and events[-2] == "content_block_delta"  # a proper end, not a reset
    assert "keel proxy stopped (1 exchange(s) recorded)." in out and "Traceback" not in err
    assert [e.path for e in read_cassette(cassette).exchanges] == ["/v1/messages"]


def _read_stream(base_url: str, events: list[str]) -> None:
    """Read a long stream with plain httpx2; note each event, and how the stream ended."""
    body = {**STREAM, "messages": ask("[[keel:words=400]]")}
    try:
        with httpx2.stream("POST", f"{base_url}/v1/messages", json=body, headers=HEADERS, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and '"type":"error"' in line.replace(" ", ""):
                    events.append(f"error: {json.loads(line[5:])['error']['type']}")
                elif line.startswith("event:") and line != "event: error":
                    events.append(line.split(": ", 1)[1])
    except httpx2.HTTPError as err:
        events.append(f"broken: {type(err).__name__}")
