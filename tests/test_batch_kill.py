"""The batch runner killed (SIGKILL, a real process) during submit, polling and download, then run again (taking its
shards over once their leases expire): the results hold each custom_id exactly once and the emulator created exactly
one batch per shard. And two runners on one job, one killed at a random point while the other carries on, on each
ledger: every input once in the results, each sent to the emulator once per attempt."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from batch_helpers import invoke, prompts, read_jsonl, write_lines
from pg_helpers import schema_url
from test_batch_runners import submitted_ids

from keel.batch import SQLiteLedger, SQLLedger, open_ledger
from keel.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig
from keel.emulator.server import BackgroundServer

KEEL = [sys.executable, "-c", "from keel.cli import main; main()"]
SHARDS = 2
LEASE = 0.5  # the killed runner's shards are taken over this long after the kill


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Emulator, dict[str, str]]]:
    emulator = Emulator(EmulatorConfig(batch_speed=0))
    with BackgroundServer(emulator) as server:
        env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": DEFAULT_API_KEY}
        env["KEEL_HOME"] = str(tmp_path / "home")
        yield emulator, env


def arguments(tmp_path: Path, shard_requests: int = 3) -> list[str]:
    args = ["batch", "run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")]
    args += ["--model", "claude-haiku-5-5", "--max-tokens", "50", "--shard-requests", str(shard_requests)]
    return [*args, "--poll-min", "0.05", "--poll-max", "0.2", "--quiet", "--lease-seconds", str(LEASE)]


def start(tmp_path: Path, env: dict[str, str], run: int, shard_requests: int = 3) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"run{run}.log").open("wb")
    args = arguments(tmp_path, shard_requests)
    return subprocess.Popen([*KEEL, *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the runner exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[bytes], emulator: Emulator, tmp_path: Path, run: int) -> None:
    """Let a run complete, moving the batch clock along while it polls."""
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        emulator.batches.advance(3600)
        time.sleep(0.05)
        assert time.monotonic() < deadline, "the rerun did not finish"
    assert proc.returncode == 0, (tmp_path / f"run{run}.log").read_text()


def ledger(tmp_path: Path) -> SQLiteLedger:
    return SQLiteLedger(tmp_path / "home" / "batches.sqlite3")


def shard_states(tmp_path: Path) -> list[str]:
    path = tmp_path / "home" / "batches.sqlite3"
    if not path.exists():
        return []
    store = ledger(tmp_path)
    jobs = store.jobs()
    states = [s.state for s in store.shards(jobs[0].job_id)] if jobs else []
    store.close()
    return states


def check_exactly_once(tmp_path: Path, emulator: Emulator) -> None:
    out = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(row["custom_id"] for row in out) == sorted(f"q{n}" for n in range(6))
    assert all(row["status"] == "succeeded" for row in out)
    assert len(emulator.batches) == SHARDS


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_during_submit_between_send_and_record(tmp_path: Path, served: tuple[Emulator, dict[str, str]]) -> None:
    emulator, env = served
    write_lines(tmp_path / "in.jsonl", prompts(6))
    emulator.inject("latency_ms=4000", path="/v1/messages/batches", limit=1)  # created, then answered late
    proc = start(tmp_path, env, 1)
    wait_until(lambda: len(emulator.batches) == 1, proc, "the first batch was created")
    kill(proc)
    assert shard_states(tmp_path)[0] == "submitting"  # the ledger never heard the batch id
    finish(start(tmp_path, env, 2), emulator, tmp_path, 2)
    check_exactly_once(tmp_path, emulator)


def test_killed_during_polling(tmp_path: Path, served: tuple[Emulator, dict[str, str]]) -> None:
    emulator, env = served
    write_lines(tmp_path / "in.jsonl", prompts(6))
    proc = start(tmp_path, env, 1)
    polls = lambda: sum(1 for e in emulator.access_log.entries() if e.method == "GET" and "msgbatch" in e.path)  # noqa: E731
    wait_until(lambda: polls() >= 3, proc, "the runner polled")
    kill(proc)
    assert shard_states(tmp_path) == ["submitted", "submitted"]
    finish(start(tmp_path, env, 2), emulator, tmp_path, 2)
    check_exactly_once(tmp_path, emulator)


def test_killed_during_result_download(tmp_path: Path, served: tuple[Emulator, dict[str, str]]) -> None:
    emulator, env = served
    write_lines(tmp_path / "in.jsonl", prompts(6))
    emulator.inject("latency_ms=4000", path="/v1/messages/batches/*/results", limit=1)
    proc = start(tmp_path, env, 1)
    wait_until(lambda: shard_states(tmp_path) == ["submitted", "submitted"], proc, "both batches were submitted")
    emulator.batches.advance(3 * 86400)
    wait_until(lambda: "ended" in shard_states(tmp_path), proc, "a batch ended")
    time.sleep(0.5)  # the runner is now waiting on the slow results download
    kill(proc)
    assert "ended" in shard_states(tmp_path)  # downloaded nothing into the ledger: it will download again
    finish(start(tmp_path, env, 2), emulator, tmp_path, 2)
    check_exactly_once(tmp_path, emulator)


@pytest.mark.parametrize(
    ("kind", "point"),
    [("sqlite", 0), ("postgres", 1), ("sqlite", 2), ("postgres", 3), ("sqlite", 4)],
    ids=lambda value: str(value),
)
def test_two_runners_on_one_job_one_killed_at_a_random_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, point: int
) -> None:
    emulator = Emulator(EmulatorConfig(batch_speed=120))  # a small batch ends in about half a second
    emulator.inject("latency_ms=100", path="/v1/messages/batches")  # and a create takes a tenth of one
    write_lines(tmp_path / "in.jsonl", prompts(8))  # four shards of two
    with ExitStack() as stack:
        server = stack.enter_context(BackgroundServer(emulator))
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", DEFAULT_API_KEY)
        monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
        if kind == "postgres":
            monkeypatch.setenv("KEEL_DATABASE_URL", stack.enter_context(schema_url()))
        else:
            monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
        victim = start(tmp_path, dict(os.environ), 1, shard_requests=2)
        ledger = stack.enter_context(closing_ledger())
        runners = lambda: sum(len(ledger.runners(job.job_id)) for job in ledger.jobs())  # noqa: E731
        wait_until(lambda: runners() > 0, victim, "the runner joined")
        delay = random.Random(point).uniform(0, 1.0)  # after the other joins: submitting, polling or collecting

        def kill_later() -> None:
            while runners() < 2 and victim.poll() is None:
                time.sleep(0.01)
            time.sleep(delay)
            victim.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_later)
        killer.start()
        helper = invoke(*arguments(tmp_path, shard_requests=2))  # the other runner, in this process
        killer.join()
        victim.wait(timeout=10)
        assert helper.exit_code == 0, helper.output
        assert f"runner {socket.gethostname()} pid {victim.pid} is on this job too" in helper.output
        out = read_jsonl(tmp_path / "out.jsonl")
        assert [row["custom_id"] for row in out] == [f"q{n}" for n in range(8)]
        assert {row["status"] for row in out} == {"succeeded"}
        assert submitted_ids(emulator) == Counter({row["custom_id"]: row["attempts"] for row in out})


@contextmanager
def closing_ledger() -> Iterator[SQLLedger]:
    """The ledger the `keel` command opens (made on first use)."""
    ledger = open_ledger()
    try:
        yield ledger
    finally:
        ledger.close()
