"""A visible "retrying" state: one `keel.retrying` notice per retry (the SDK's own and keel's rounds), one when the
call recovers, and the lines `keel run` / `keel batch run` show from them while riding out an outage."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_helpers import invoke, prompts, read_jsonl, write_lines
from keel_helpers import SIDES, Side, ask, keel_client, stream_on

import keel
from keel import RetryPolicy
from keel._retry_notices import handled_at_info, sdk_retries_noticed
from keel.emulator import Emulator

MODEL = "claude-haiku-5-5"
QUICK = RetryPolicy("quick", max_retries=2, timeout=10.0, budget=30.0, backoff_base=0.05, backoff_cap=0.2)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.notices: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.notices.append({**getattr(record, "keel", {}), "line": record.getMessage()})


@pytest.fixture
def notices() -> Iterator[list[dict[str, object]]]:
    """The `keel.retrying` notices given while the test runs (the SDK's retries included)."""
    kept = _Kept()
    with handled_at_info("keel.retrying", kept), sdk_retries_noticed():
        yield kept.notices


def test_each_retry_is_one_notice_with_its_class_request_id_attempt_and_wait_then_one_recovered(
    keel_emulator: Emulator, notices: list[dict[str, object]]
) -> None:
    # 4 failures: the SDK's 2 retries fail too (attempts 1-3), keel's round retries (4 fails), its SDK retry succeeds
    keel_emulator.inject("status=529; retry_after_ms=20", path="/v1/messages", limit=4)
    reply = keel_client(keel_emulator, policy=QUICK).messages.create(model=MODEL, max_tokens=50, messages=ask("Hi"))
    assert reply.record.attempts == 5
    retrying = [n for n in notices if n["event"] == "retrying"]
    assert [n["attempt"] for n in retrying] == [1, 2, 3, 4]
    assert {n["error_class"] for n in retrying} == {"overloaded"} and {n["status"] for n in retrying} == {529}
    served = [e.request_id for e in keel_emulator.access_log.entries()]
    assert [n["request_id"] for n in retrying] == served[:4]
    assert [n["wait_seconds"] for n in retrying][:2] == [0.02, 0.02]  # the SDK's waits: the retry-after it was given
    assert 0.02 <= float(str(retrying[2]["wait_seconds"])) <= 0.2  # keel's round: its jitter, never under retry-after
    assert re.fullmatch(
        r"retrying: overloaded \(request_id req_\w+\), attempt 1 failed, next in 0\.0 s", str(retrying[0]["line"])
    )
    (recovered,) = [n for n in notices if n["event"] == "recovered"]
    assert recovered["attempt"] == 5 and recovered["request_id"] == reply.request_id == served[4]


@pytest.mark.parametrize("side", SIDES)
def test_a_background_stream_that_cannot_open_notices_its_rounds_like_a_create(
    keel_emulator: Emulator, notices: list[dict[str, object]], side: Side
) -> None:
    # 4 failures: the SDK's 2 retries fail (attempts 1-3), keel's round retries (4 fails), the SDK's retry opens it
    keel_emulator.inject("status=529; retry_after_ms=20", path="/v1/messages", limit=4)
    got = stream_on(side, keel_emulator, options={"policy": QUICK}, model=MODEL, max_tokens=50, messages=ask("Hi"))
    assert got.error is None and got.stream.reply is not None and got.stream.reply.record.attempts == 5
    retrying = [n for n in notices if n["event"] == "retrying"]
    assert [(n["attempt"], n["error_class"]) for n in retrying] == [(a, "overloaded") for a in (1, 2, 3, 4)]
    assert 0.02 <= float(str(retrying[2]["wait_seconds"])) <= 0.2  # keel's round, between the SDK's own two waits
    (recovered,) = [n for n in notices if n["event"] == "recovered"]
    assert recovered["attempt"] == 5


def test_a_call_without_retries_gives_no_notice(keel_emulator: Emulator, notices: list[dict[str, object]]) -> None:
    keel_client(keel_emulator, policy=QUICK).messages.create(model=MODEL, max_tokens=50, messages=ask("Hi"))
    assert notices == []


def test_keel_run_shows_retrying_then_recovered_and_completes(tmp_path: Path, served_emulator: Emulator) -> None:
    served_emulator.inject(
        "status=529; retry_after_ms=20", path="/v1/messages", limit=7
    )  # the SDK's 4 retries, and more
    src = write_lines(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(src), "--out", str(out), "--model", MODEL, "--max-tokens", "50", "--quiet",
                    "--concurrency", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 3
    lines = result.output.splitlines()
    retrying = [n for n, line in enumerate(lines) if line.startswith("keel run: retrying: overloaded (request_id req_")]
    recovered = [n for n, line in enumerate(lines) if line.startswith("keel run: recovered: ")]
    assert 1 <= len(retrying) <= 7  # one line per retry at most: those close together are counted into one
    assert len(recovered) == 1 and recovered[0] > retrying[-1]
    assert re.search(r"attempt \d+ failed, next in \d+\.\d s", lines[retrying[0]])


def test_keel_batch_run_shows_retrying_while_its_polls_fail_and_completes(
    tmp_path: Path, served_emulator: Emulator
) -> None:
    # the SDK's own retries only: the batch clock races on (results expire 29 simulated days after creation)
    served_emulator.inject("status=529; retry_after_ms=20", path="/v1/messages/batches/*", limit=3)
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    result = invoke("batch", "run", str(src), "--out", str(out), "--model", MODEL, "--max-tokens", "50",
                    "--poll-min", "0.01", "--poll-max", "0.05", "--quiet", clock=served_emulator)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 2
    assert re.search(
        r"^keel batch run: retrying: overloaded \(request_id req_\w+\), attempt 1 failed", result.output, re.M
    )
    assert "keel batch run: recovered: " in result.output


def test_an_attempt_without_a_response_is_noticed_as_such(
    keel_emulator: Emulator, keel_loopback_url: str, notices: list[dict[str, object]]
) -> None:
    import anthropic

    keel_emulator.inject("latency_ms=2000", path="/v1/messages", limit=2)  # longer than the attempt's timeout
    sdk = anthropic.Anthropic(api_key="keel-emulator-key", base_url=keel_loopback_url)
    impatient = RetryPolicy("impatient", max_retries=2, timeout=0.5)
    reply = keel.Client(sdk, policy=impatient).messages.create(model=MODEL, max_tokens=50, messages=ask("Hi"))
    assert reply.record.attempts == 3
    retrying = [n for n in notices if n["event"] == "retrying"]
    assert [(n["error_class"], n["request_id"], n["attempt"]) for n in retrying] == [
        ("timeout", None, 1),
        ("timeout", None, 2),
    ]
    assert "retrying: timeout (no response), attempt 1 failed, next in" in str(retrying[0]["line"])


def test_retries_close_together_are_one_line_that_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from keel import _jobcli

    monkeypatch.setattr(_jobcli, "RETRY_LINE_GAP", 0.2)
    out = io.StringIO()
    notify = logging.getLogger("keel.retrying")
    with _jobcli.retries_shown(Console(file=out, width=200), "run"):
        for attempt in (1, 2, 3):  # the first is shown, the next two held
            notify.info(f"retrying: attempt {attempt}", extra={"keel": {"event": "retrying"}})
        time.sleep(0.25)
        notify.info("retrying: attempt 4", extra={"keel": {"event": "retrying"}})  # shown, with the two held
        notify.info("recovered: attempt 5", extra={"keel": {"event": "recovered"}})
    assert out.getvalue().splitlines() == [
        "keel run: retrying: attempt 1",
        "keel run: retrying: attempt 4 (and 2 more retries)",
        "keel run: recovered: attempt 5",
    ]
