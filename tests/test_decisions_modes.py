"""Choosing a delivery mode: the defaults and every boundary, at and either side of it.

The thresholds come from the documented rule (README "Delivery modes", `keel._modes`): anything that may run
past 10 minutes must stream (the SDK's own guard: 600 s at its assumed 128,000 tokens per hour, so 21,333
max_tokens); a batch is for bulk work (two requests or more) that nobody waits for and that can wait an hour.
"""

from __future__ import annotations

import anthropic
import pytest
from keel_helpers import ask, keel_client

import keel
from keel._modes import call_mode
from keel.emulator import Emulator

LONGEST_STANDARD = 21_333  # 3,600 s * 21,333 / 128,000 = 599.99 s: the SDK still allows a non-streaming call
HOUR = 3600.0


def test_the_sdk_refuses_a_standard_call_exactly_above_keels_threshold(keel_anthropic: anthropic.Anthropic) -> None:
    """keel's 21,333 is the SDK's own guard: the SDK makes a standard call of 21,333 and refuses 21,334."""
    reply = keel_anthropic.messages.create(model="claude-haiku-5-5", max_tokens=LONGEST_STANDARD, messages=ask("hi"))
    assert reply.stop_reason == "end_turn"
    with pytest.raises(ValueError, match="Streaming is required"):
        keel_anthropic.messages.create(model="claude-haiku-5-5", max_tokens=LONGEST_STANDARD + 1, messages=ask("hi"))


def test_defaults_are_someone_waiting_for_a_single_short_call() -> None:
    assert keel.choose_mode() == keel.choose_mode(waiting=True, requests=1)
    assert keel.choose_mode().mode == "standard"
    # someone waits by default: many requests are not batched unless the caller says nobody waits
    assert keel.choose_mode(requests=10_000).mode == "standard"
    # one request by default: not waiting is not enough for a batch
    assert keel.choose_mode(waiting=False).mode == "standard"


@pytest.mark.parametrize(
    ("max_tokens", "mode"), [(LONGEST_STANDARD - 1, "standard"), (LONGEST_STANDARD, "standard"), (21_334, "stream")]
)
def test_max_tokens_over_21333_streams(max_tokens: int, mode: str) -> None:
    assert keel.choose_mode(max_tokens=max_tokens).mode == mode
    assert keel.choose_mode(waiting=False, max_tokens=max_tokens).mode == mode


@pytest.mark.parametrize(("seconds", "mode"), [(599.5, "standard"), (600.0, "standard"), (600.5, "stream")])
def test_an_expected_time_over_600_seconds_streams(seconds: float, mode: str) -> None:
    assert keel.choose_mode(expected_seconds=seconds).mode == mode
    assert keel.choose_mode(waiting=False, expected_seconds=seconds).mode == mode


@pytest.mark.parametrize(("requests", "mode"), [(1, "standard"), (2, "batch"), (3, "batch")])
def test_two_requests_nobody_waits_for_are_a_batch(requests: int, mode: str) -> None:
    assert keel.choose_mode(waiting=False, requests=requests).mode == mode


@pytest.mark.parametrize(("can_wait", "mode"), [(HOUR - 1, "standard"), (HOUR, "batch"), (HOUR + 1, "batch")])
def test_a_batch_needs_an_hour_of_patience(can_wait: float, mode: str) -> None:
    assert keel.choose_mode(waiting=False, requests=100, can_wait_seconds=can_wait).mode == mode


def test_nobody_waiting_and_no_limit_given_can_wait_for_a_batch() -> None:
    assert keel.choose_mode(waiting=False, requests=2, can_wait_seconds=None).mode == "batch"


def test_someone_waiting_never_gets_a_batch_however_long_they_could_wait() -> None:
    assert keel.choose_mode(waiting=True, requests=10_000, can_wait_seconds=48 * HOUR).mode == "standard"


def test_watching_streams_even_bulk_work() -> None:
    assert keel.choose_mode(watching=True, waiting=False, requests=10_000).mode == "stream"


def test_the_reason_says_why_in_words_that_carry_the_decision() -> None:
    assert "watching" in keel.choose_mode(watching=True).reason
    assert "10 minutes" in keel.choose_mode(max_tokens=64_000).reason
    batch = keel.choose_mode(waiting=False, requests=10_000).reason
    assert "10,000 requests" in batch and "50%" in batch
    assert "waits" in keel.choose_mode(waiting=True).reason
    assert "background" in keel.choose_mode(waiting=False).reason
    hurried = keel.choose_mode(waiting=False, requests=500, can_wait_seconds=1_800)
    assert hurried.mode == "standard" and "500 requests due within 1,800 s" in hurried.reason
    assert "too soon for a batch" in hurried.reason
    assert str(keel.choose_mode(watching=True)).startswith("stream: someone is watching")


@pytest.mark.parametrize(
    ("max_tokens", "mode"), [(LONGEST_STANDARD - 1, "standard"), (LONGEST_STANDARD, "standard"), (21_334, "stream")]
)
def test_auto_mode_streams_exactly_when_the_sdk_would_refuse_a_standard_call(max_tokens: int, mode: str) -> None:
    assert call_mode("auto", {"max_tokens": max_tokens}) == mode


def test_auto_mode_without_max_tokens_is_standard() -> None:
    assert call_mode("auto", {}) == "standard"


@pytest.mark.parametrize("mode", ["standard", "stream"])
def test_an_explicit_mode_is_kept_whatever_max_tokens(mode: str) -> None:
    assert call_mode(mode, {"max_tokens": 64_000}) == mode  # type: ignore[arg-type]
    assert call_mode(mode, {"max_tokens": 10}) == mode  # type: ignore[arg-type]


def test_batch_is_not_a_mode_of_a_single_call() -> None:
    with pytest.raises(ValueError, match=r"expected 'standard', 'stream' or 'auto' for a call, got 'batch'"):
        call_mode("batch", {"max_tokens": 10})  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_tokens", "mode"), [(LONGEST_STANDARD, "standard"), (21_334, "stream")])
def test_a_client_call_in_auto_mode_is_recorded_in_the_mode_it_ran(
    keel_emulator: Emulator, max_tokens: int, mode: str
) -> None:
    claude = keel_client(keel_emulator)
    reply = claude.messages.create(model="claude-haiku-5-5", max_tokens=max_tokens, mode="auto", messages=ask("hi"))
    assert reply.record.mode == mode and reply.outcome.kind == "end_turn"
