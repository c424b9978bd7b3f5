"""Every emulator response body validates against the official API description, for clients that deserialise strictly.

The schemas are the project's own reduced copy, `tests/fixtures/openapi_subset.json` (where it comes from, how it
was reduced and the few amendments: its `_about`). A representative response of every endpoint, every outcome and
every error the emulator gives is checked, required-but-nullable fields included. SSE events are not response bodies
here: their shapes are checked against the real recordings in tests/test_sse_wire_format.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jsonschema import Draft202012Validator

from keel import Usage
from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, EmulatorTransport, RateLimits
from keel.emulator.catalog import load_catalog

SUBSET: dict[str, Any] = json.loads((Path(__file__).parent / "fixtures" / "openapi_subset.json").read_text())
HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
MODEL = "claude-sonnet-5-5"
WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def check(body: Any, schema: str) -> None:
    """`body` is valid against components/schemas/`schema` of the subset; every error is listed on failure."""
    validator = Draft202012Validator({**SUBSET, "$ref": f"#/components/schemas/{schema}"})
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in validator.iter_errors(body)
    ]
    assert not errors, f"not a valid {schema}:\n" + "\n".join(errors)


@pytest.fixture
def http() -> Iterator[tuple[Emulator, httpx2.Client]]:
    emulator = Emulator(EmulatorConfig(batch_speed=0))
    with httpx2.Client(transport=EmulatorTransport(emulator), base_url="http://emulator", headers=HEADERS) as http:
        yield emulator, http


def message(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": text}], **extra}


OUTCOMES = {
    "end_turn": message("Hello"),
    "exact reply": message("[[keel:reply=Hi there!]]"),
    "max_tokens": message("[[keel:words=80]]", max_tokens=5),
    "stop_sequence": message("[[keel:reply=one two three]]", stop_sequences=["two"]),
    "tool_use": message("Weather? [[keel:tool=get_weather]]", tools=[WEATHER]),
    "tool_use cut by max_tokens": message("[[keel:tool=get_weather]]", tools=[WEATHER], max_tokens=12),
    "refusal": message("[[keel:refuse=cyber]]"),
    "refusal general_harms": message("[[keel:refuse=general_harms]]"),
    "refusal without a category": message("[[keel:refuse=null]]"),
    "pause_turn": message("[[keel:pause]]"),
    "model_context_window_exceeded": message("[[keel:context-full]]"),
    "empty": message("[[keel:empty]]"),
    "thinking": message("Think [[keel:think]]"),
    "thinking on a 4.x model": {**message("Hi"), "model": "claude-opus-4-6", "thinking": {"type": "adaptive"}},
    "a model without inference_geo": {**message("Hi"), "model": "claude-haiku-4-5-20251001"},
    "inference_geo us": message("Hi", inference_geo="us"),
    "prompt caching": message("Hi", cache_control={"type": "ephemeral"}, system="You are terse. " * 600),
}


@pytest.mark.parametrize("body", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_every_outcome_is_a_valid_message(http: tuple[Emulator, httpx2.Client], body: dict[str, Any]) -> None:
    _, client = http
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    check(response.json(), "Message")


def test_the_new_fields_carry_what_the_api_reports(http: tuple[Emulator, httpx2.Client]) -> None:
    _, client = http
    plain = client.post("/v1/messages", json=message("Hello")).json()
    assert plain["container"] is None and plain["content"][0]["citations"] is None
    assert plain["usage"]["inference_geo"] == "global"
    assert plain["usage"]["output_tokens_details"] is None and plain["usage"]["server_tool_use"] is None
    thought = client.post("/v1/messages", json=message("[[keel:think]] [[keel:reply=ok]]")).json()["usage"]
    assert thought["output_tokens_details"] == {"thinking_tokens": thought["output_tokens"] - 1}  # all but "ok"
    paused = client.post("/v1/messages", json=message("[[keel:pause]]")).json()["usage"]
    assert paused["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    assert client.post("/v1/messages", json=message("Hi", inference_geo="us")).json()["usage"]["inference_geo"] == "us"
    old = {**message("Hi"), "model": "claude-sonnet-4-5-20250929"}
    assert client.post("/v1/messages", json=old).json()["usage"]["inference_geo"] is None


def test_keel_still_reads_the_usage(http: tuple[Emulator, httpx2.Client]) -> None:
    _, client = http
    for body in OUTCOMES.values():
        usage = client.post("/v1/messages", json=body).json()["usage"]
        assert Usage.of(usage).output_tokens == usage["output_tokens"]


def test_count_tokens(http: tuple[Emulator, httpx2.Client]) -> None:
    _, client = http
    check(
        client.post(
            "/v1/messages/count_tokens", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        ).json(),
        "CountMessageTokensResponse",
    )


def test_models_list_and_every_model(http: tuple[Emulator, httpx2.Client]) -> None:
    _, client = http
    check(client.get("/v1/models", params={"limit": 1000}).json(), "ListResponse_ModelInfo_")
    for spec in load_catalog().models:
        info = client.get(f"/v1/models/{spec.id}").json()
        check(info, "ModelInfo")
        assert info["capabilities"]["thinking"]["types"]["enabled"]["supported"] == (
            "enabled" not in spec.thinking_rejected
        )
        assert info["capabilities"]["effort"]["supported"] == (spec.effort_levels is not None)


def test_message_batches_and_every_kind_of_result(http: tuple[Emulator, httpx2.Client]) -> None:
    emulator, client = http
    emulator.inject("errored_share=0.2; expired_share=0.2")
    requests = [{"custom_id": f"q{n}", "params": message(f"Question {n}")} for n in range(8)]
    requests += [
        {"custom_id": "bad", "params": message("Hi", max_tokens=999_999)},
        {"custom_id": "tool", "params": message("[[keel:tool=get_weather]]", tools=[WEATHER])},
        {"custom_id": "think", "params": message("[[keel:think]]")},
    ]
    created = client.post("/v1/messages/batches", json={"requests": requests}).json()
    check(created, "MessageBatch")
    to_cancel = client.post("/v1/messages/batches", json={"requests": requests[:2]}).json()
    check(client.post(f"/v1/messages/batches/{to_cancel['id']}/cancel").json(), "MessageBatch")
    emulator.batches.advance(2 * 86400)
    check(client.get(f"/v1/messages/batches/{created['id']}").json(), "MessageBatch")
    check(client.get("/v1/messages/batches").json(), "ListResponse_MessageBatch_")
    kinds = set()
    for batch in (created, to_cancel):
        for line in client.get(f"/v1/messages/batches/{batch['id']}/results").text.splitlines():
            result = json.loads(line)
            check(result, "MessageBatchIndividualResponse")
            kinds.add(result["result"]["type"])
    assert kinds == {"succeeded", "errored", "expired", "canceled"}
    check(client.delete(f"/v1/messages/batches/{created['id']}").json(), "DeleteMessageBatchResponse")


ERRORS: dict[str, tuple[str, str, dict[str, Any] | None, dict[str, str]]] = {
    # name: (method, path, json body, extra headers)
    "400 validation": ("POST", "/v1/messages", {"model": MODEL, "messages": []}, {}),
    "400 invalid JSON": ("POST", "/v1/messages", None, {"content-type": "application/json"}),
    "401": ("POST", "/v1/messages", message("Hi"), {"x-api-key": "wrong"}),
    "404 unknown model": ("POST", "/v1/messages", {**message("Hi"), "model": "claude-nope"}, {}),
    "404 unknown path": ("GET", "/v1/nowhere", None, {}),
    "404 unknown batch": ("GET", "/v1/messages/batches/msgbatch_01nope", None, {}),
    "405": ("GET", "/v1/messages", None, {}),
    "413": ("POST", "/v1/messages", message("Hi"), {"content-length": str(64 * 1024 * 1024)}),
    **{
        f"{status} fault": ("POST", "/v1/messages", message("Hi"), {"x-keel-fault": f"status={status}"})
        for status in (402, 403, 409, 429, 500, 503, 504, 529)
    },
    "429 spend limit": (
        "POST",
        "/v1/messages",
        message("Hi"),
        {"x-keel-fault": "status=429; error_code=enforced_spend_limit_reached"},
    ),
    "fault on the models": ("GET", "/v1/models", None, {"x-keel-fault": "status=529"}),
}


@pytest.mark.parametrize("request_", ERRORS.values(), ids=ERRORS.keys())
def test_every_error_is_a_valid_error_response(
    http: tuple[Emulator, httpx2.Client], request_: tuple[str, str, dict[str, Any] | None, dict[str, str]]
) -> None:
    _, client = http
    method, path, body, headers = request_
    content = b"{not json" if body is None and method == "POST" else None
    response = client.request(method, path, json=body, content=content, headers=headers)
    assert response.status_code >= 400
    check(response.json(), "ErrorResponse")


def test_rate_limit_errors_are_valid_error_responses() -> None:
    from keel.emulator import Limits, Ramp

    limits = RateLimits(
        1, 1_000_000, 100_000, enforce=True, keys={"ramped": Limits(100, 1_000_000, 100_000)}, ramp=Ramp(0.01, 0.01)
    )
    emulator = Emulator(EmulatorConfig(rate_limits=limits, api_key=None))
    with httpx2.Client(transport=EmulatorTransport(emulator), base_url="http://emulator", headers=HEADERS) as client:
        client.post("/v1/messages", json=message("Hi"))
        limited = client.post("/v1/messages", json=message("Hi"))
        assert limited.status_code == 429
        check(limited.json(), "ErrorResponse")
