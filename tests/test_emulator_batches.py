"""The emulator's Message Batches API through the official SDK (strict response validation), on a batch clock
the tests move explicitly (`batch_speed=0` freezes it; `emulator.batches.advance(seconds)` moves it)."""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from typer.testing import CliRunner

from keel.cli import app as cli_app
from keel.emulator import (
    DEFAULT_API_KEY,
    Emulator,
    EmulatorConfig,
    EmulatorTransport,
    Fault,
    FaultSpecError,
    client,
    load_scenario,
    parse_fault_header,
)
from keel.emulator.batches import CANCEL_SECONDS, DAY

MODEL = "claude-haiku-5-5"
HOUR = 3600.0


def params(text: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


def requests_of(count: int, **extra: Any) -> list[Any]:
    return [{"custom_id": f"req-{i}", "params": params(f"Question {i}", **extra)} for i in range(count)]


def make(config: EmulatorConfig | None = None) -> tuple[Emulator, anthropic.Anthropic]:
    emulator = Emulator(config or EmulatorConfig(batch_speed=0))
    return emulator, client(emulator, _strict_response_validation=True, max_retries=0)


@pytest.fixture
def emu() -> Iterator[tuple[Emulator, anthropic.Anthropic]]:
    emulator, sdk = make()
    yield emulator, sdk
    sdk.close()


def total(batch: MessageBatch) -> int:
    c = batch.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


def raw_lines(sdk: anthropic.Anthropic, batch_id: str) -> list[dict[str, Any]]:
    """The results as sent, each line checked against the SDK's type with full validation."""
    with sdk.messages.batches.with_streaming_response.results(batch_id) as response:
        assert response.headers["content-type"].startswith("application/x-jsonl")
        body = response.read()
    assert body.endswith(b"\n") and b"\n\n" not in body and not body.startswith(b"\n")
    lines = [json.loads(line) for line in body.split(b"\n")[:-1]]
    for line in lines:
        MessageBatchIndividualResponse.model_validate(line, strict=False)
    return lines


def end(emulator: Emulator, sdk: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    emulator.batches.advance(DAY)
    batch = sdk.messages.batches.retrieve(batch_id)
    assert batch.processing_status == "ended"
    return batch


# --- lifecycle ------------------------------------------------------------------------------------


def test_create_gives_an_in_progress_batch(keel_anthropic: anthropic.Anthropic) -> None:
    batch = keel_anthropic.messages.batches.create(requests=requests_of(3))
    assert batch.id.startswith("msgbatch_01") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.model_dump() == {
        "processing": 3,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert batch.ended_at is None and batch.cancel_initiated_at is None and batch.archived_at is None
    assert batch.results_url is None
    assert keel_anthropic.messages.batches.retrieve(batch.id) == batch


def test_requests_finish_progressively_and_counts_always_sum(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(40))
    seen = []
    for _ in range(12):
        emulator.batches.advance(10)
        batch = sdk.messages.batches.retrieve(batch.id)
        assert total(batch) == 40
        seen.append(batch.request_counts.processing)
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0 and any(0 < n < 40 for n in seen)
    assert batch.processing_status == "ended" and batch.request_counts.succeeded == 40
    assert batch.ended_at is not None and batch.created_at < batch.ended_at < batch.expires_at
    assert batch.results_url == f"http://emulator.keel.invalid/v1/messages/batches/{batch.id}/results"


def test_results_hold_each_custom_id_once_with_valid_batch_messages(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(25))
    end(emulator, sdk, batch.id)
    results = list(sdk.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == sorted(f"req-{i}" for i in range(25))
    for line in raw_lines(sdk, batch.id):
        message = Message.model_validate(line["result"]["message"])
        assert line["result"]["type"] == "succeeded" and message.usage.service_tier == "batch"
    ids = [r.result.message.id for r in results if r.result.type == "succeeded"]
    assert len(set(ids)) == 25 and all(i.startswith("msg_01") for i in ids)
    # The same responder as /v1/messages: same content and usage for the same params and seed.
    direct = sdk.messages.create(**params("Question 7"))
    from_batch = next(r.result for r in results if r.custom_id == "req-7")
    assert from_batch.type == "succeeded"
    assert from_batch.message.content == direct.content
    assert from_batch.message.usage.output_tokens == direct.usage.output_tokens
    assert from_batch.message.usage.input_tokens == direct.usage.input_tokens


def test_tool_calls_keep_unique_ids_across_identical_requests(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    same = params("[[keel:tool=lookup]]", tools=[tool])
    batch = sdk.messages.batches.create(requests=[{"custom_id": f"t{i}", "params": same} for i in range(4)])
    end(emulator, sdk, batch.id)
    tool_ids = []
    for result in sdk.messages.batches.results(batch.id):
        assert result.result.type == "succeeded"
        tool_ids += [b.id for b in result.result.message.content if b.type == "tool_use"]
    assert len(tool_ids) == 4 and len(set(tool_ids)) == 4


def test_invalid_params_come_back_errored_with_the_messages_wording(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    too_many = params(max_tokens=999_999)
    unknown = {**params(), "model": "claude-nonexistent-1"}
    reqs = [*requests_of(3), {"custom_id": "too-many", "params": too_many}, {"custom_id": "unknown", "params": unknown}]
    batch = sdk.messages.batches.create(requests=reqs)  # params are not checked at creation
    assert batch.request_counts.processing == 5
    batch = end(emulator, sdk, batch.id)
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (3, 2)
    results = {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(**too_many, timeout=30)  # a timeout: else the SDK refuses such max_tokens itself
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(**unknown)
    for custom_id, err in (("too-many", bad.value), ("unknown", missing.value)):
        result = results[custom_id]
        assert result.type == "errored"
        assert result.error.request_id is None
        assert result.error.error.model_dump() == err.body["error"]  # type: ignore[index]
    assert results["too-many"].error.error.type == "invalid_request_error"  # type: ignore[union-attr]
    assert results["unknown"].error.error.type == "not_found_error"  # type: ignore[union-attr]
    line = next(line for line in raw_lines(sdk, batch.id) if line["custom_id"] == "too-many")
    assert line["result"]["error"] == {"type": "error", "error": bad.value.body["error"], "request_id": None}  # type: ignore[index]


# --- faults, expiry, cancel -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error_type"), [("", "api_error"), ("; error_type=overloaded_error", "overloaded_error")]
)
def test_errored_share_fault(emu: tuple[Emulator, anthropic.Anthropic], spec: str, error_type: str) -> None:
    emulator, sdk = emu
    emulator.inject(f"errored_share=0.25{spec}", path="/v1/messages/batches")
    batch = sdk.messages.batches.create(requests=requests_of(20))
    sdk.messages.create(**params())  # /v1/messages is untouched by a batch-only rule
    batch = end(emulator, sdk, batch.id)
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (15, 5)
    errored = [r.result for r in sdk.messages.batches.results(batch.id) if r.result.type == "errored"]
    assert len(errored) == 5 and {e.error.error.type for e in errored} == {error_type}  # type: ignore[union-attr]
    faults = [(e.method, e.path, e.fault) for e in emulator.access_log.entries()]
    assert faults[0][:2] == ("POST", "/v1/messages/batches") and "errored_share=0.25" in (faults[0][2] or "")
    assert all(fault is None for _, _, fault in faults[1:])  # reads and /v1/messages are not faulted


def test_errored_share_is_deterministic_by_seed() -> None:
    def errored(seed: int) -> list[str]:
        emulator, sdk = make(EmulatorConfig(batch_speed=0, seed=seed))
        batch = sdk.messages.batches.create(
            requests=requests_of(30), extra_headers={"x-keel-fault": "errored_share=0.3"}
        )
        end(emulator, sdk, batch.id)
        return sorted(r.custom_id for r in sdk.messages.batches.results(batch.id) if r.result.type == "errored")

    assert errored(3) == errored(3) and len(errored(3)) == 9
    assert errored(3) != errored(4)


def test_expired_share_requests_stay_processing_until_24h(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(10), extra_headers={"x-keel-fault": "expired_share=0.3"})
    emulator.batches.advance(HOUR)
    batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "in_progress"
    assert (batch.request_counts.succeeded, batch.request_counts.processing) == (7, 3)
    emulator.batches.advance(DAY - HOUR)
    batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.ended_at == batch.expires_at
    assert (batch.request_counts.succeeded, batch.request_counts.expired, batch.request_counts.processing) == (7, 3, 0)
    kinds = [r.result.type for r in sdk.messages.batches.results(batch.id)]
    assert kinds.count("expired") == 3 and kinds.count("succeeded") == 7


def test_stalled_batches_expire_at_24h() -> None:
    emulator, sdk = make(EmulatorConfig(batch_speed=0, batch_stall=True))
    batch = sdk.messages.batches.create(requests=requests_of(6))
    emulator.batches.advance(DAY - 1)
    assert sdk.messages.batches.retrieve(batch.id).request_counts.processing == 6
    emulator.batches.advance(1)
    batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.ended_at == batch.expires_at
    assert batch.request_counts.expired == 6 and total(batch) == 6
    assert {r.result.type for r in sdk.messages.batches.results(batch.id)} == {"expired"}


def test_cancel_midway_keeps_finished_results_and_cancels_the_rest(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(20))
    emulator.batches.advance(30)  # about half of a ~60 s batch
    before = sdk.messages.batches.retrieve(batch.id).request_counts
    assert 0 < before.succeeded < 20
    canceling = sdk.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert canceling.request_counts == before and canceling.results_url is None
    emulator.batches.advance(CANCEL_SECONDS)
    ended = sdk.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.succeeded == before.succeeded
    assert ended.request_counts.canceled == 20 - before.succeeded and total(ended) == 20
    kinds = [r.result.type for r in sdk.messages.batches.results(batch.id)]
    assert kinds.count("succeeded") == before.succeeded and kinds.count("canceled") == 20 - before.succeeded
    assert sdk.messages.batches.cancel(batch.id) == ended  # cancelling an ended batch changes nothing
    emulator.batches.advance(HOUR)
    assert sdk.messages.batches.retrieve(batch.id) == ended


def test_delete_only_once_ended_then_404(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(2))
    with pytest.raises(anthropic.BadRequestError, match="cannot be deleted while it is in_progress"):
        sdk.messages.batches.delete(batch.id)
    end(emulator, sdk, batch.id)
    deleted = sdk.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError) as err:
        sdk.messages.batches.retrieve(batch.id)
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.delete(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        sdk.get(f"/v1/messages/batches/{batch.id}/results", cast_to=httpx2.Response)
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.cancel("msgbatch_01nope")


def test_results_before_the_end_are_refused(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    _, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(2))
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        sdk.messages.batches.results(batch.id)  # the SDK checks results_url first
    with pytest.raises(anthropic.BadRequestError, match="has not finished processing"):
        sdk.get(f"/v1/messages/batches/{batch.id}/results", cast_to=httpx2.Response)


def test_results_are_archived_after_29_days(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batch = sdk.messages.batches.create(requests=requests_of(2))
    emulator.batches.advance(29 * DAY - 1)
    assert sdk.messages.batches.retrieve(batch.id).archived_at is None
    assert len(list(sdk.messages.batches.results(batch.id))) == 2
    emulator.batches.advance(1)
    archived = sdk.messages.batches.retrieve(batch.id)
    assert archived.archived_at == archived.created_at + timedelta(days=29)
    with pytest.raises(anthropic.NotFoundError, match="no longer available"):
        sdk.messages.batches.results(batch.id)


# --- listing, limits, custom ids --------------------------------------------------------------------


def test_list_pages_newest_first_in_both_directions(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    ids = []
    for _ in range(7):
        ids.append(sdk.messages.batches.create(requests=requests_of(1)).id)
        emulator.batches.advance(1)
    newest_first = ids[::-1]
    first = sdk.messages.batches.list(limit=3)
    assert [b.id for b in first.data] == newest_first[:3] and first.has_more
    assert (first.first_id, first.last_id) == (newest_first[0], newest_first[2])
    assert [b.id for b in sdk.messages.batches.list(limit=3)] == newest_first  # auto-pagination: each once
    assert [b.id for b in sdk.messages.batches.list()] == newest_first
    last = sdk.messages.batches.list(limit=3, after_id=newest_first[5])
    assert [b.id for b in last.data] == newest_first[6:] and not last.has_more
    back = sdk.messages.batches.list(limit=3, before_id=newest_first[6])
    assert [b.id for b in back.data] == newest_first[3:6] and back.has_more
    assert [b.id for b in back] == newest_first[3:6] + newest_first[:3]  # walking back towards the newest
    top = sdk.messages.batches.list(limit=3, before_id=newest_first[3])
    assert [b.id for b in top.data] == newest_first[:3] and not top.has_more
    for limit in (0, 1001):
        with pytest.raises(anthropic.BadRequestError, match="limit"):
            sdk.messages.batches.list(limit=limit)


def test_limits_on_requests_and_bytes() -> None:
    emulator, sdk = make(EmulatorConfig(batch_speed=0, max_batch_requests=5, max_batch_bytes=4000))
    assert sdk.messages.batches.create(requests=requests_of(5)).request_counts.processing == 5
    with pytest.raises(anthropic.BadRequestError) as err:
        sdk.messages.batches.create(requests=requests_of(6))
    assert err.value.body["error"]["message"] == (  # type: ignore[index]
        "requests: List should have at most 5 items after validation, not 6"
    )
    with pytest.raises(anthropic.BadRequestError, match="at least 1 item"):
        sdk.messages.batches.create(requests=[])
    big = [{"custom_id": "big", "params": params("word " * 1000)}]
    with pytest.raises(anthropic.ContentTooLargeError) as too_large:
        sdk.messages.batches.create(requests=big)
    assert too_large.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    sdk.messages.create(**params("word " * 1000))  # /v1/messages keeps its own 32 MB limit
    assert [e.status for e in emulator.access_log.entries()] == [200, 400, 400, 413, 200]


@pytest.mark.parametrize(
    ("custom_id", "message"),
    [
        ("has space", "requests.3.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"),
        ("é", "requests.3.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"),
        ("x" * 65, "requests.3.custom_id: String should have at most 64 characters"),
        ("", "requests.3.custom_id: String should have at least 1 character"),
        ("req-1", "requests.3.custom_id: duplicate custom_id 'req-1' (also used by requests.1)"),
    ],
)
def test_bad_or_duplicate_custom_id_names_it(
    emu: tuple[Emulator, anthropic.Anthropic], custom_id: str, message: str
) -> None:
    _, sdk = emu
    reqs = [*requests_of(3), {"custom_id": custom_id, "params": params()}]
    with pytest.raises(anthropic.BadRequestError) as err:
        sdk.messages.batches.create(requests=reqs)
    assert err.value.body["error"]["message"].startswith(message)  # type: ignore[index]
    assert sdk.messages.batches.list().data == []


def test_envelope_errors(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    _, sdk = emu
    cases = [
        ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
        ({"requests": [{"custom_id": "a", "params": [], "x": 1}]}, "requests.0.x: Extra inputs are not permitted"),
        ({"requests": [{"custom_id": "a", "params": []}]}, "requests.0.params: Input should be a valid dictionary"),
        ({"requests": {}}, "requests: Input should be a valid list"),
        ({}, "requests: Field required"),
    ]
    for body, message in cases:
        with pytest.raises(anthropic.BadRequestError) as err:
            sdk.post("/v1/messages/batches", body=body, cast_to=MessageBatch)
        assert err.value.body["error"]["message"] == message  # type: ignore[index]


# --- order, clock, transport, memory ----------------------------------------------------------------


def test_results_order_is_shuffled_but_deterministic_for_a_seed() -> None:
    def order(seed: int) -> list[str]:
        emulator, sdk = make(EmulatorConfig(batch_speed=0, seed=seed))
        batch = sdk.messages.batches.create(requests=requests_of(30))
        end(emulator, sdk, batch.id)
        return [line["custom_id"] for line in raw_lines(sdk, batch.id)]

    first = order(11)
    assert first == order(11)
    assert sorted(first) == sorted(f"req-{i}" for i in range(30)) and first != [f"req-{i}" for i in range(30)]
    assert first != order(12)


def test_batch_speed_runs_the_clock_faster() -> None:
    emulator, sdk = make(EmulatorConfig(batch_speed=3600))  # an hour a second
    batch = sdk.messages.batches.create(requests=requests_of(3))
    deadline = time.monotonic() + 5
    while batch.processing_status != "ended" and time.monotonic() < deadline:
        time.sleep(0.02)
        batch = sdk.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.request_counts.succeeded == 3
    with pytest.raises(ValueError):
        emulator.batches.advance(-1)


def test_results_over_loopback(keel_emulator: Emulator, keel_loopback_url: str) -> None:
    with anthropic.Anthropic(
        api_key=DEFAULT_API_KEY, base_url=keel_loopback_url, _strict_response_validation=True
    ) as sdk:
        batch = sdk.messages.batches.create(requests=requests_of(5))
        keel_emulator.batches.advance(DAY)
        ended = sdk.messages.batches.retrieve(batch.id)
        assert ended.results_url == f"{keel_loopback_url}/v1/messages/batches/{batch.id}/results"
        results = list(sdk.messages.batches.results(batch.id))
        assert sorted(r.custom_id for r in results) == [f"req-{i}" for i in range(5)]
        assert {r.result.type for r in results} == {"succeeded"}


def test_every_batch_endpoint_is_in_the_access_log(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, sdk = emu
    batches = sdk.messages.batches.with_raw_response
    created = batches.create(requests=requests_of(2))
    batch_id = created.parse().id
    responses = [created, batches.retrieve(batch_id), batches.list(), batches.cancel(batch_id)]
    emulator.batches.advance(HOUR)
    with sdk.messages.batches.with_streaming_response.results(batch_id) as results:
        results.read()
    responses.append(batches.delete(batch_id))
    entries = emulator.access_log.entries()
    base = "/v1/messages/batches"
    expected = [
        ("POST", base),
        ("GET", f"{base}/{batch_id}"),
        ("GET", base),
        ("POST", f"{base}/{batch_id}/cancel"),
        ("GET", f"{base}/{batch_id}"),  # the SDK's results() retrieves the batch first
        ("GET", f"{base}/{batch_id}/results"),
        ("DELETE", f"{base}/{batch_id}"),
    ]
    assert [(e.method, e.path) for e in entries] == expected
    assert all(e.status == 200 and e.request_id.startswith("req_011C") for e in entries)
    logged = {e.request_id for e in entries}
    assert {r.headers["request-id"] for r in responses} <= logged
    assert results.headers["request-id"] in logged


def test_status_faults_apply_to_batch_paths(emu: tuple[Emulator, anthropic.Anthropic]) -> None:
    emulator, _ = emu
    retrying = client(emulator, _strict_response_validation=True, max_retries=2)
    emulator.inject("status=529; times=1; retry_after_ms=1", path="/v1/messages/batches")
    batch = retrying.messages.batches.create(requests=requests_of(1))
    retrying.messages.batches.retrieve(batch.id)
    assert [e.status for e in emulator.access_log.entries()] == [529, 200, 529, 200]


def test_serving_100k_results_streams_in_bounded_memory() -> None:
    emulator = Emulator(EmulatorConfig(batch_speed=0))
    same = json.dumps(params("Hi")).encode()
    body = b'{"requests":[' + b",".join(b'{"custom_id":"r%d","params":%s}' % (i, same) for i in range(100_000)) + b"]}"
    headers = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    base = "http://emulator.keel.invalid"
    # a generous read timeout: the 100,000-request body takes seconds to accept on a loaded machine
    with httpx2.Client(transport=EmulatorTransport(emulator), base_url=base, headers=headers, timeout=60) as http:
        created = http.post("/v1/messages/batches", content=body)
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        del body
        emulator.batches.advance(DAY)
        lines = size = 0
        last = b"\n"
        tracemalloc.start()
        try:
            with http.stream("GET", f"/v1/messages/batches/{batch_id}/results") as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    assert b"\n\n" not in last + chunk[:1] + chunk
                    lines += chunk.count(b"\n")
                    size += len(chunk)
                    last = chunk[-1:]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert lines == 100_000 and last == b"\n"
    assert size > 20_000_000 and peak < size / 10, (peak, size)


# --- fault rules and the CLI ------------------------------------------------------------------------


def test_share_fields_parse_and_stay_batch_only(tmp_path: Path) -> None:
    fault = parse_fault_header("errored_share=0.5; error_type=overloaded_error")
    assert fault == Fault(errored_share=0.5, error_type="overloaded_error") and fault.batch_only
    assert not parse_fault_header("status=529; errored_share=0.5").batch_only
    with pytest.raises(FaultSpecError, match="errored_share: expected a number from 0 to 1"):
        parse_fault_header("errored_share=1.5")
    path = tmp_path / "faults.toml"
    path.write_text('[[rules]]\npath = "/v1/messages/batches"\nexpired_share = 0.2\n')
    scenario = load_scenario(path)
    assert scenario.pick("/v1/messages/batches", None, 0) is None  # a read
    assert scenario.pick("/v1/messages/batches", None, 0, batch_create=True) == Fault(expired_share=0.2)


def test_cli_serve_has_batch_speed() -> None:
    result = CliRunner().invoke(cli_app, ["emulator", "serve", "--help"])
    assert result.exit_code == 0 and "--batch-speed" in result.output


async def test_async_client_reads_results(
    keel_emulator: Emulator, keel_async_anthropic: anthropic.AsyncAnthropic
) -> None:
    batch = await keel_async_anthropic.messages.batches.create(requests=requests_of(4))
    keel_emulator.batches.advance(DAY)
    results = [r async for r in await keel_async_anthropic.messages.batches.results(batch.id)]
    assert sorted(r.custom_id for r in results) == [f"req-{i}" for i in range(4)]
    assert [b.id async for b in keel_async_anthropic.messages.batches.list()] == [batch.id]
