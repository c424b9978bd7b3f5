"""`keel run` killed (SIGKILL, a real process) in the middle of a job, then run again (in-process, to save a second
interpreter's start): the results hold every input exactly once, and the emulator, which saw every request body, was
not sent again anything that had a result."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import read_jsonl, write_lines
from typer.testing import CliRunner

from keel.bulk import RunLedger
from keel.cli import app as keel_cli
from keel.emulator import DEFAULT_API_KEY, Emulator
from keel.emulator.server import BackgroundServer

KEEL = [sys.executable, "-c", "from keel.cli import main; main()"]
REQUESTS = 12
CONCURRENCY = 2
QUESTION = re.compile(rb"Question (\d+) ")


class Bodies:
    """The emulator's app, noting which question each /v1/messages request carried."""

    def __init__(self, app: Emulator) -> None:
        self.app = app
        self.sent: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""

        async def reading() -> Any:
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            if (
                scope.get("path") == "/v1/messages"
                and not message.get("more_body")
                and (found := QUESTION.search(body))
            ):
                self.sent[f"q{int(found.group(1))}"] += 1
            return message

        await self.app(scope, reading, send)


def arguments(tmp_path: Path) -> list[str]:
    args = ["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--model", "claude-haiku-5-5"]
    return [
        *args,
        "--max-tokens",
        "50",
        "--concurrency",
        str(CONCURRENCY),
        "--quiet",
        "--ledger",
        str(tmp_path / "runs.db"),
        "--lease-seconds",
        "0.5",  # the killed run's requests in flight are sent again this long after the kill
    ]


def states(tmp_path: Path) -> dict[str, tuple[str, str | None]]:
    """custom_id -> (state, request_id), as the ledger holds them now."""
    if not (tmp_path / "runs.db").exists():
        return {}
    ledger = RunLedger(tmp_path / "runs.db")
    try:
        jobs = ledger.jobs()
        rows = ledger.items_in_order(jobs[0].job_id) if jobs else iter(())
        return {row["custom_id"]: (row["state"], row["request_id"]) for row in rows}
    finally:
        ledger.close()


def test_killed_mid_run_then_run_again_sends_nothing_twice_that_had_a_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [{"custom_id": f"q{n}", "prompt": f"Question {n} [[keel:words=5]]"} for n in range(REQUESTS)]
    write_lines(tmp_path / "in.jsonl", lines)
    emulator = Emulator()
    emulator.inject("latency_ms=150", path="/v1/messages")  # every call slow: the kill always finds calls in flight
    app = Bodies(emulator)
    with BackgroundServer(app) as server:
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": DEFAULT_API_KEY}
        log = (tmp_path / "run1.log").open("wb")
        first = subprocess.Popen([*KEEL, *arguments(tmp_path)], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while sum(state == "succeeded" for state, _ in states(tmp_path).values()) < 4:
            assert first.poll() is None, (tmp_path / "run1.log").read_text()
            assert time.monotonic() < deadline, "the run did not get half-way"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        at_kill = states(tmp_path)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
        second = CliRunner().invoke(keel_cli, arguments(tmp_path))
        assert second.exit_code == 0, second.output

    done = {custom_id for custom_id, (state, _) in at_kill.items() if state == "succeeded"}
    in_flight = {custom_id for custom_id, (state, _) in at_kill.items() if state == "sending"}
    assert len(done) >= 4 and 1 <= len(in_flight) <= CONCURRENCY and len(done) < REQUESTS  # killed mid-request
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [row["custom_id"] for row in out] == [f"q{n}" for n in range(REQUESTS)]  # each exactly once, in order
    assert all(row["status"] == "succeeded" for row in out)
    for row in out:
        custom_id = row["custom_id"]
        if custom_id in done:  # its result kept: not sent again
            assert app.sent[custom_id] == 1 and row["request_id"] == at_kill[custom_id][1] and row["attempts"] == 1
        elif custom_id in in_flight:  # the at-least-once edge: it may have been served before the kill
            assert 1 <= app.sent[custom_id] <= 2 and row["attempts"] == 2
        else:
            assert app.sent[custom_id] == 1 and row["attempts"] == 1
    for custom_id in in_flight:
        assert f"{custom_id} sent again: request_id=req_" in second.output
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])["request_id"].startswith("req_")
