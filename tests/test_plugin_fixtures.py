"""The pytest plugin's `keel_client`, `keel_async_client` and `keel_records`: a wrapped client on the test's emulator,
and the records of the test's calls in memory (docs/testing.md shows them in use; its examples run in the suite)."""

from __future__ import annotations

import anthropic
import pytest

import keel
from keel.emulator import Emulator
from keel.testing import CapturedRecords

ASK = [{"role": "user", "content": "ping [[keel:reply=pong]]"}]


async def test_the_async_client_records_into_keel_records(
    keel_async_client: keel.AsyncClient, keel_records: CapturedRecords, keel_emulator: Emulator
) -> None:
    keel_emulator.inject("status=529; times=1; retry_after_ms=5")
    reply = await keel_async_client.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=ASK)
    assert reply.text == "pong"
    served = [entry.request_id for entry in keel_emulator.access_log.entries()]
    assert [record.kind for record in keel_records.records] == ["attempt", "attempt", "call"]  # in emitted order
    assert [attempt.request_id for attempt in keel_records.attempts] == served
    assert [attempt.status for attempt in keel_records.attempts] == [529, 200]
    assert keel_records.calls == [reply.record]


def test_a_client_of_the_tests_own_writes_to_keel_records_too(
    keel_anthropic: anthropic.Anthropic, keel_records: CapturedRecords, keel_client: keel.Client
) -> None:
    own = keel.Client(keel_anthropic, records=keel_records, policy="background")
    first = keel_client.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=ASK)
    second = own.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=ASK)
    assert [call.request_id for call in keel_records.calls] == [first.request_id, second.request_id]
    assert [call.policy for call in keel_records.calls] == ["interactive", "background"]


def test_a_failed_call_is_captured_with_its_error_class(
    keel_client: keel.Client, keel_records: CapturedRecords
) -> None:
    with pytest.raises(keel.CallFailed):
        keel_client.messages.create(
            model="claude-haiku-5-5",
            max_tokens=20,
            messages=ASK,
            extra_headers={"x-keel-fault": "status=401; error_type=authentication_error"},
        )
    (call,) = keel_records.calls
    assert call.error_class == "authentication" and call.request_id == keel_records.attempts[0].request_id
