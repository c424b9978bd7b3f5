"""Fuzz: the emulator's endpoints, under schemathesis (hypothesis) driven by the OpenAPI description the emulator
serves for itself (`GET /openapi.json`, made from its request models): valid and malformed bodies, parameters and
headers. No faults are injected, so every answer is a 2xx or a 4xx: never a 5xx, never a hang, and every rejection
is the API's error shape with a message and the request-id of its response."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from reliability_helpers import SOAK, scale
from schemathesis import GenerationMode

from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig
from keel.emulator.errors import error_type_for
from keel.emulator.openapi import openapi_document
from keel.emulator.server import BackgroundServer

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
# the key is the test's (a generated one would only ever be refused); every body and parameter is generated
SCHEMA.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], with_security_parameters=False
)
# soak adds the coverage phase: boundary values and every kind of wrong type for each field, over a thousand a body
SCHEMA.config.phases.update(phases=["examples", "fuzzing", *(["coverage"] if SOAK else [])])
EXAMPLES = scale(5, 300)  # per endpoint
TIMEOUT = 10.0  # seconds an answer may take: longer is a hang


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The emulator, over loopback; afterwards, what it answered (by status, from its access log; `-rP` shows it)."""
    emulator = Emulator(EmulatorConfig(batch_speed=0))
    with BackgroundServer(emulator) as server:
        yield server.base_url
    statuses = Counter(entry.status for entry in emulator.access_log.entries())
    print(f"the emulator answered {statuses.total()} fuzzed requests: {dict(sorted(statuses.items()))}")


def test_the_emulator_serves_its_openapi_description(base_url: str) -> None:
    served = requests.get(f"{base_url}/openapi.json", timeout=TIMEOUT)
    assert served.status_code == 200 and served.json() == json.loads(json.dumps(openapi_document()))
    assert set(served.json()["paths"]) >= {"/v1/messages", "/v1/messages/batches", "/v1/models"}


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_endpoint_answers_fuzzed_input_with_a_result_or_an_error_in_the_api_shape(
    case: schemathesis.Case, base_url: str
) -> None:
    response = case.call(base_url=base_url, headers={"x-api-key": DEFAULT_API_KEY}, timeout=TIMEOUT)
    status = response.status_code
    assert status < 500, f"{status} for {case.method} {case.formatted_path}: {response.text[:500]}"
    if status >= 400:
        body = response.json()
        assert body["type"] == "error" and [body["request_id"]] == response.headers["request-id"], body
        assert body["error"]["type"] == error_type_for(status) and body["error"]["message"].strip(), body
    else:
        assert status == 200
