"""`keel proxy` in front of the emulator (served over loopback), driven by the official SDK and plain httpx2.

The emulator stands in for the real API: whatever reaches the client through the proxy must be what the client gets
from the upstream directly (ids aside), faults applied by the proxy must look to the SDK exactly as the API's own,
and the proxy must pass streams through as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from keel_helpers import canary_key
from proxy_helpers import MODEL, Proxied, ask, proxied, settled, sse_events, without_ids
from typer.testing import CliRunner

from keel import ProxyConfigError
from keel.cli import app as cli_app
from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, Scenario, parse_fault_header
from keel.emulator.faults import Rule
from keel.emulator.keys import key_id
from keel.emulator.server import BackgroundServer, free_port
from keel.proxy import BackgroundProxy, Proxy, ProxyConfig

HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def through() -> Iterator[Proxied]:
    with proxied(EmulatorConfig(api_key=None, batch_speed=3600)) as setup:
        yield setup


def test_sdk_calls_come_back_as_from_the_upstream(through: Proxied) -> None:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": ask("Hello [[keel:words=12]]")}
    with through.sdk() as via, through.sdk(direct=True) as direct:
        proxied_reply = via.messages.with_raw_response.create(**params)
        direct_reply = direct.messages.with_raw_response.create(**params)
    assert without_ids(json.loads(proxied_reply.http_response.text)) == without_ids(
        json.loads(direct_reply.http_response.text)
    )
    served = through.emulator.access_log.entries()[-2]
    entry = settled(through, proxied_reply.request_id)[-1]
    assert proxied_reply.request_id == served.request_id == entry.request_id  # the upstream's own request-id
    assert entry.status == 200 and entry.fault is None and not entry.stream and entry.model == MODEL
    assert 0 < entry.head_ms <= entry.total_ms
    for name in ("anthropic-ratelimit-requests-limit", "content-type", "anthropic-organization-id"):
        assert proxied_reply.headers[name] == direct_reply.headers[name]


def test_the_clients_own_key_is_forwarded_untouched_and_never_logged(through: Proxied) -> None:
    key = canary_key("proxied")
    with through.sdk(api_key=key) as sdk:
        reply = sdk.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"))
    assert through.emulator.access_log.entries()[-1].key_id == key_id(key)  # the upstream got this very key
    entry = settled(through, reply._request_id)[-1]
    assert entry.key_id == key_id(key) and key not in entry.to_json() and key not in entry.line()
    bearer = httpx2.post(
        f"{through.url}/v1/messages/count_tokens",
        json={"model": MODEL, "messages": ask("hi")},
        headers={"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"},
    )
    assert bearer.status_code == 200 and through.emulator.access_log.entries()[-1].key_id == key_id(key)


def test_streams_pass_through_event_by_event_as_they_arrive() -> None:
    with proxied(EmulatorConfig(tps=100)) as setup, setup.sdk() as sdk:  # 10 ms per token upstream
        started = time.perf_counter()
        arrivals = []
        with sdk.messages.stream(model=MODEL, max_tokens=100, messages=ask("[[keel:words=30]]")) as stream:
            for _ in stream.text_stream:
                arrivals.append(time.perf_counter() - started)
            final = stream.get_final_message()
            request_id = stream.request_id
    assert len(arrivals) == 30 and final.stop_reason == "end_turn"
    # the tokens reach the client at the upstream's pace (290 ms from first to last), not held back and sent at once
    assert arrivals[15] - arrivals[0] > 0.1 and arrivals[-1] - arrivals[15] > 0.1
    assert settled(setup, request_id)[-1].stream


def test_plain_httpx2_gets_the_same_events_in_the_same_order(through: Proxied) -> None:
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": ask("Weather? [[keel:tool=get_weather]]")}
    body["tools"] = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {}}}}]
    with httpx2.Client(headers=HEADERS) as http:
        via = http.post(f"{through.url}/v1/messages", json=body)
        direct = http.post(f"{through.upstream.base_url}/v1/messages", json=body)
    assert via.headers["content-type"] == direct.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert via.headers["request-id"] == through.emulator.access_log.entries()[-2].request_id
    assert without_ids(sse_events(via.text)) == without_ids(sse_events(direct.text))


async def test_async_sdk_and_many_concurrent_streams(through: Proxied) -> None:
    async with through.async_sdk() as sdk:
        reply = await sdk.messages.create(model=MODEL, max_tokens=50, messages=ask("[[keel:reply=pong]]"))
        assert reply.content[0].type == "text" and reply.content[0].text == "pong"

        async def one(n: int) -> str:
            words = f"[[keel:reply=stream {n} done]]"
            async with sdk.messages.stream(model=MODEL, max_tokens=50, messages=ask(words)) as stream:
                return "".join([text async for text in stream.text_stream])

        assert await asyncio.gather(*(one(n) for n in range(40))) == [f"stream {n} done" for n in range(40)]


def test_message_batches_through_the_proxy_results_included(through: Proxied) -> None:
    params = {"model": MODEL, "max_tokens": 30, "messages": ask("Summarise")}
    with through.sdk() as sdk:
        batch = sdk.messages.batches.create(requests=[{"custom_id": f"q{n}", "params": params} for n in range(3)])
        through.emulator.batches.advance(3600)
        ended = sdk.messages.batches.retrieve(batch.id)
        assert ended.results_url == f"{through.url}/v1/messages/batches/{batch.id}/results"  # back through the proxy
        results = list(sdk.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in results) == ["q0", "q1", "q2"]
    results_path = f"/v1/messages/batches/{batch.id}/results"
    assert settled(through, lambda entry: entry.path == results_path)[-1].path == results_path


# --- faults, applied by the proxy, seen as the API's own ------------------------------------------------------------

FAULTS = [
    "status=529",
    "status=429; retry_after_ms=5",
    "status=429; error_code=enforced_spend_limit_reached",
    "status=500",
    "status=503; should_retry=false",
    "status=400; message=nope",
    "status=413",
]


def _failure(sdk: anthropic.Anthropic, fault: str) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"), extra_headers={"x-keel-fault": fault})
    return caught.value


@pytest.mark.usefixtures("quick_backoff")
@pytest.mark.parametrize("fault", FAULTS)
def test_status_faults_raise_what_the_api_would_and_retry_alike(through: Proxied, fault: str) -> None:
    proxy_log, upstream_log = through.proxy.log, through.emulator.access_log
    with through.sdk(max_retries=2) as via, through.sdk(max_retries=2, direct=True) as direct:
        before = len(proxy_log.entries()), len(upstream_log.entries())
        proxied_error = _failure(via, fault)
        proxied_attempts = settled(through, proxied_error.request_id)[before[0] :]
        assert len(upstream_log.entries()) == before[1]  # an injected error never reaches the upstream
        direct_error = _failure(direct, fault)
        direct_attempts = upstream_log.entries()[before[1] :]
    assert type(proxied_error) is type(direct_error) and proxied_error.status_code == direct_error.status_code
    assert proxied_error.body == {**direct_error.body, "request_id": proxied_error.request_id}  # type: ignore[dict-item]
    assert proxied_error.response.headers.get("retry-after") == direct_error.response.headers.get("retry-after")
    assert proxied_error.request_id == proxied_attempts[-1].request_id and proxied_error.request_id.startswith("req_")
    # the SDK made the same attempts (its retries, or none) through the proxy as against the upstream itself
    assert [(e.status, e.retry_count) for e in proxied_attempts] == [(e.status, e.retry_count) for e in direct_attempts]
    assert all(e.fault == parse_fault_header(fault).describe() for e in proxied_attempts)


def test_the_sdk_retries_injected_529s_then_succeeds(through: Proxied) -> None:
    with through.sdk(max_retries=3) as sdk:
        reply = sdk.messages.create(
            model=MODEL,
            max_tokens=20,
            messages=ask("[[keel:reply=made it]]"),
            extra_headers={"x-keel-fault": "status=529; times=2; retry_after_ms=1"},
        )
    assert reply.content[0].type == "text" and reply.content[0].text == "made it"
    entries = settled(through, reply._request_id)[-3:]
    assert [(e.status, e.retry_count, e.fault is not None) for e in entries] == [
        (529, 0, True),
        (529, 1, True),
        (200, 2, False),
    ]
    assert reply._request_id == through.emulator.access_log.entries()[-1].request_id  # only attempt 3 went upstream


def test_mid_stream_error_and_drop_are_the_apis(through: Proxied) -> None:
    with through.sdk(max_retries=0) as sdk:
        fault = {"x-keel-fault": "stream_error_after=4"}
        with (
            pytest.raises(anthropic.APIStatusError) as caught,
            sdk.messages.stream(
                model=MODEL, max_tokens=50, messages=ask("[[keel:words=20]]"), extra_headers=fault
            ) as s,
        ):
            for _ in s.text_stream:
                pass
        assert caught.value.status_code == 200 and caught.value.type == "overloaded_error"  # as the API's: not retried
        dropped = {"x-keel-fault": "drop_after=5"}
        with sdk.messages.stream(
            model=MODEL, max_tokens=50, messages=ask("[[keel:words=20]]"), extra_headers=dropped
        ) as s:
            final = s.get_final_message()
        assert final.stop_reason is None  # cut before message_stop, as a dropped stream is
    with httpx2.Client(headers=HEADERS) as http:
        body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": ask("[[keel:words=20]]")}
        cut = http.post(f"{through.url}/v1/messages", json=body, headers={"x-keel-fault": "stream_error_after=3"})
    events = sse_events(cut.text)
    assert [name for name, _ in events] == ["message_start", "content_block_start", "ping", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_latency_faults_delay_the_answer(through: Proxied) -> None:
    with through.sdk() as sdk:
        started = time.perf_counter()
        sdk.messages.create(
            model=MODEL, max_tokens=20, messages=ask("hi"), extra_headers={"x-keel-fault": "latency_ms=150"}
        )
        assert time.perf_counter() - started >= 0.15
        started = time.perf_counter()
        with sdk.messages.stream(
            model=MODEL, max_tokens=50, messages=ask("[[keel:words=10]]"), extra_headers={"x-keel-fault": "tps=100"}
        ) as stream:
            assert len(list(stream.text_stream)) == 10
        assert time.perf_counter() - started >= 0.1  # ten content events at 100 a second


def test_scenario_rules_apply_to_real_traffic() -> None:
    scenario = Scenario(rules=[Rule(parse_fault_header("status=503"), path="/v1/messages/count_tokens", limit=1)])
    with proxied(scenario=scenario) as setup, setup.sdk(max_retries=0) as sdk:
        with pytest.raises(anthropic.InternalServerError):
            sdk.messages.count_tokens(model=MODEL, messages=ask("hi"))
        assert sdk.messages.count_tokens(model=MODEL, messages=ask("hi")).input_tokens > 0  # the rule's limit is spent
        last = sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    assert [e.status for e in settled(setup, last._request_id)] == [503, 200, 200]


def test_connection_resets_injected_or_upstream_reach_the_client_as_the_apis_would() -> None:
    with proxied() as setup, setup.sdk(max_retries=0) as sdk:
        with pytest.raises(anthropic.APIConnectionError):
            sdk.messages.create(
                model=MODEL, max_tokens=10, messages=ask("hi"), extra_headers={"x-keel-fault": "connection_reset=true"}
            )
        injected = settled(setup, lambda entry: entry.status == 0)[-1]
        assert injected.fault == "connection_reset=True" and injected.error == "the connection was reset (injected)"
        assert setup.emulator.access_log.entries() == []  # never went upstream
        setup.emulator.inject("connection_reset=true", limit=1)
        with pytest.raises(anthropic.InternalServerError) as caught:
            sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
        assert (
            sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("[[keel:reply=ok]]")).stop_reason == "end_turn"
        )
    assert caught.value.status_code == 502 and caught.value.type == "api_error"
    assert "Connection reset" in caught.value.message  # the upstream reset, named
    assert [e.status for e in setup.emulator.access_log.entries()] == [0, 200]


def test_a_bad_fault_header_is_the_apis_400(through: Proxied) -> None:
    with through.sdk(max_retries=0) as sdk, pytest.raises(anthropic.BadRequestError, match="x-keel-fault"):
        sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"), extra_headers={"x-keel-fault": "bogus"})


# --- bad upstreams and configurations --------------------------------------------------------------------------------


@pytest.mark.usefixtures("quick_backoff")
def test_an_unreachable_upstream_is_a_502_api_error_naming_it_without_credentials() -> None:
    port = free_port()
    proxy = Proxy(ProxyConfig(upstream=f"http://keel:hunter2@127.0.0.1:{port}"))
    with (
        BackgroundProxy(proxy) as server,
        anthropic.Anthropic(api_key="k", base_url=server.base_url, max_retries=1) as sdk,
        pytest.raises(anthropic.InternalServerError) as caught,
    ):
        sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    error = caught.value
    assert error.status_code == 502 and error.type == "api_error"
    assert f"http://keel:***@127.0.0.1:{port}" in error.message and "hunter2" not in error.message
    assert [e.status for e in proxy.log.entries()] == [502, 502]  # retried, as the SDK retries a 502 (logged: stopped)
    assert all(e.error and "hunter2" not in e.error for e in proxy.log.entries())


@pytest.mark.parametrize("exempt", [False, True])
def test_the_upstream_is_reached_through_the_environments_http_proxy_unless_no_proxy_exempts_it(
    exempt: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator plays the HTTP proxy (it answers the forwarded request by its path): an upstream whose name does
    not resolve is reached through it, and is unreachable when `no_proxy` names it."""
    emulator = Emulator(EmulatorConfig(api_key=None))
    with BackgroundServer(emulator) as http_proxy:
        for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", http_proxy.base_url)
        if exempt:
            monkeypatch.setenv("NO_PROXY", "upstream.keel.invalid")
        proxy = Proxy(ProxyConfig(upstream="http://upstream.keel.invalid"))
        with BackgroundProxy(proxy) as server, httpx2.Client(trust_env=False, timeout=30) as client:  # straight to it
            answer = client.post(
                f"{server.base_url}/v1/messages",
                json={"model": MODEL, "max_tokens": 10, "messages": ask("hi")},
                headers=HEADERS,
            )
    if exempt:
        assert answer.status_code == 502 and "http://upstream.keel.invalid is unreachable" in answer.text
    else:
        assert answer.status_code == 200 and answer.json()["type"] == "message"
        assert [entry.path for entry in emulator.access_log.entries()] == ["/v1/messages"]


async def _silent_app(scope: Any, receive: Any, send: Any) -> None:
    """An upstream that takes its time to answer at all."""
    if scope["type"] == "http":
        await asyncio.sleep(2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_an_upstream_that_does_not_answer_in_time_is_a_504_timeout_error() -> None:
    with BackgroundServer(_silent_app) as upstream:
        proxy = Proxy(ProxyConfig(upstream=upstream.base_url, read_timeout=0.2))
        with (
            BackgroundProxy(proxy) as server,
            anthropic.Anthropic(api_key="k", base_url=server.base_url, max_retries=0) as sdk,
            pytest.raises(anthropic.GatewayTimeoutError) as caught,
        ):
            sdk.messages.create(model=MODEL, max_tokens=10, messages=ask("hi"))
    assert caught.value.status_code == 504 and caught.value.type == "timeout_error"
    assert f"the upstream {upstream.base_url} did not answer in time" in caught.value.message


@pytest.mark.parametrize(
    ("upstream", "scenario", "complaint"),
    [
        ("api.anthropic.com", Scenario(), "http(s) URL"),
        ("http://127.0.0.1:1", Scenario(rules=[Rule(parse_fault_header("errored_share=0.5"))]), "errored_share"),
    ],
)
def test_configurations_the_proxy_cannot_honour_are_refused(upstream: str, scenario: Scenario, complaint: str) -> None:
    with pytest.raises(ProxyConfigError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        Proxy(ProxyConfig(upstream=upstream, scenario=scenario))


def test_keel_proxy_refuses_what_it_cannot_honour_before_listening(tmp_path: Path) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nrpm = 5\n")
    broken = tmp_path / "broken.toml"
    broken.write_text('[[rules]]\nstatus = "soon"\n')
    runner = CliRunner()
    for args, complaint in (
        (["--faults", str(limits)], "[limits] table is the emulator's own rate limiting"),
        (["--faults", str(broken)], f"bad scenario file: {broken}:2: rule 1: status"),
        (["--upstream", "ftp://example"], "--upstream must be an http(s) URL"),
    ):
        result = runner.invoke(cli_app, ["proxy", "--upstream", "http://127.0.0.1:1", *args])
        assert result.exit_code == 2 and complaint in result.output, result.output
