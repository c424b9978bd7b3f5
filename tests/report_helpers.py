"""The records file the report tests read: real keel calls against the emulator, with the faults a report shows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from keel_helpers import ask, fault, keel_client

from keel import CallFailed, PriceTable, RetryPolicy, load_prices
from keel._records import CallRecord
from keel.emulator import AccessEntry, Emulator

MODEL = "claude-sonnet-5-5"
UNPRICED = "claude-haiku-5-5"  # left out of the test's price table: its cost is unknown, not 0
STORM = RetryPolicy("bulk", max_retries=2, timeout=5.0, budget=20.0, backoff_base=0.001, backoff_cap=0.005)


@dataclass
class Traffic:
    path: Path
    calls: list[CallRecord]
    served: list[AccessEntry]
    storm: CallRecord


def make_traffic(keel_emulator: Emulator, tmp_path: Path) -> Traffic:
    """A records file from real calls: successes, a 529 storm ridden out, a spend cap, a refusal, a stream."""
    packaged = load_prices()
    price = packaged.price_for(MODEL)
    assert price is not None
    prices = PriceTable({MODEL: price}, as_of=packaged.as_of)
    path = tmp_path / "records.jsonl"
    keel = keel_client(keel_emulator, records=path, prices=prices)
    calls = [keel.messages.create(model=MODEL, max_tokens=100, messages=ask(f"hi {n}")).record for n in range(3)]
    calls.append(keel.messages.create(model=UNPRICED, max_tokens=100, messages=ask("x"), policy="background").record)
    calls.append(keel.messages.create(model=UNPRICED, max_tokens=100, messages=ask("y [[keel:words=30]]")).record)
    keel_emulator.inject("status=529; retry_after_ms=1", limit=5)
    storm = keel.messages.create(model=MODEL, max_tokens=100, messages=ask("storm"), policy=STORM).record
    calls.append(storm)
    with pytest.raises(CallFailed) as caught:
        keel.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=ask("over budget"),
            extra_headers=fault("status=429; error_code=enforced_spend_limit_reached"),
        )
    calls.append(caught.value.record)
    calls.append(keel.messages.create(model=MODEL, max_tokens=100, messages=ask("[[keel:refuse=cyber]]")).record)
    with keel.messages.stream(model=MODEL, max_tokens=100, messages=ask("s [[keel:words=25]]")) as stream:
        stream.until_done()
    assert stream.reply is not None
    calls.append(stream.reply.record)
    again = keel.messages.create(
        model=MODEL, max_tokens=100, messages=ask("again"), extra_headers=fault("status=529; times=1; retry_after_ms=1")
    )
    calls.append(again.record)
    keel.close()
    assert storm.attempts == 6 and caught.value.error_class.name == "spend_cap"
    return Traffic(path, calls, keel_emulator.access_log.entries(), storm)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
