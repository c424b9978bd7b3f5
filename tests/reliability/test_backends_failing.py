"""Backends failing: the shared servers a job leans on restart in the middle of it, each a private server the test
starts on a spare port. Redis under a rate-limited bulk run (the limiter's buckets and the at-most-once tool store
on it); PostgreSQL under a batch run with two runners (soak only: a private PostgreSQL takes seconds to make). The job
finishes with nothing lost or duplicated, after a message saying the backend was unreachable and answers again,
without its password."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import pytest
from batch_helpers import prompts, read_jsonl, write_lines
from crash_helpers import Counted, Keel, batch_emulator, wait_until
from pg_helpers import PrivatePostgres
from ratelimit_helpers import PrivateRedis
from reliability_helpers import SOAK, scale
from test_batch_runners import submitted_ids

from keel import AsyncClient
from keel.batch.inputs import Defaults
from keel.batch.postgres import PostgresLedger
from keel.bulk import BulkOptions, BulkRunner, RunLedger
from keel.emulator import DEFAULT_API_KEY, Emulator
from keel.emulator.server import BackgroundServer
from keel.ratelimit import Limits, RateLimiter
from keel.ratelimit.redis_backend import RedisBackend
from keel.stores import RedisStore
from keel.tools import at_most_once

LINES = scale(12, 200)
OUTAGE = 1.0  # seconds the server is down
PASSWORD = "hunter2-backend"


def outage(down: Any, up: Any, when: Any) -> threading.Thread:
    """A thread that takes the server down once `when()` holds, and brings it back `OUTAGE` seconds later."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while not when() and time.monotonic() < deadline:
            time.sleep(0.01)
        down()
        time.sleep(OUTAGE)
        up()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def run_job(base_url: str, limiter: RateLimiter, folder: Path) -> None:
    """`keel run`'s job, from Python: a bulk run whose calls the limiter paces."""
    keel = AsyncClient(anthropic.AsyncAnthropic(api_key=DEFAULT_API_KEY, base_url=base_url), limiter=limiter)
    ledger = RunLedger(folder / "runs.db")
    try:
        runner = BulkRunner(keel, ledger, BulkOptions(Defaults("claude-haiku-5-5", 20), concurrency=4))
        await runner.run(folder / "in.jsonl", folder / "out.jsonl")
    finally:
        await keel.close()
        ledger.close()


def test_a_redis_restart_mid_run_loses_nothing_duplicates_nothing_and_runs_no_tool_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PrivateRedis(tmp_path, password=PASSWORD, persistent=True)  # the tool store's records outlive a restart
    server.start()
    limiter = RateLimiter(
        Limits(requests=max(LINES // 2, 10), input_tokens=100_000, output_tokens=100_000, per=1),
        backend=RedisBackend(server.url, reconnect_for=30),
    )
    store = RedisStore(server.url, reconnect_for=30)
    ran: list[int] = []

    @at_most_once(store=store, name="notify")
    def notify(input: dict[str, Any]) -> str:
        ran.append(input["line"])
        return f"notified {input['line']}"

    def notifying(stop: threading.Event) -> None:  # a tool call for every line, before, during and after the outage
        for line in range(LINES):
            notify({"line": line}, conversation="job")
            if not stop.is_set():
                time.sleep(2 * OUTAGE / LINES)

    emulator = Emulator()
    emulator.inject("latency_ms=20", path="/v1/messages")
    counted = Counted(emulator)
    counted.gate.set()
    lines = [{"custom_id": f"q{n}", "prompt": f"Question {n} [[keel:words=5]]"} for n in range(LINES)]
    write_lines(tmp_path / "in.jsonl", lines)
    stop = threading.Event()
    try:
        with BackgroundServer(counted) as served, caplog.at_level(logging.WARNING):
            answered = lambda: sum(counted.sent.values()) >= LINES // 3  # noqa: E731
            restart = outage(server.kill, server.start, answered)
            tools = threading.Thread(target=notifying, args=(stop,))
            tools.start()
            asyncio.run(run_job(served.base_url, limiter, tmp_path))
            stop.set()
            restart.join()
            tools.join()
        replayed = [notify.run({"line": line}, conversation="job").replayed for line in range(LINES)]
    finally:
        limiter.close()
        store.close()
        server.kill()
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [row["custom_id"] for row in out] == [f"q{n}" for n in range(LINES)]  # nothing lost, nothing twice
    assert {row["status"] for row in out} == {"succeeded"}
    assert counted.sent == Counter({row["custom_id"]: row["attempts"] for row in out})  # each sent as often as said
    assert sorted(ran) == list(range(LINES)) and all(replayed)  # each tool ran once, its result kept through it
    assert f"redis://default:***@127.0.0.1:{server.port}/0 unreachable" in caplog.text
    assert "answers again" in caplog.text and PASSWORD not in caplog.text


@pytest.mark.skipif(not SOAK, reason="soak only (make soak): a private PostgreSQL takes seconds to make")
def test_a_postgres_restart_during_a_batch_run_with_two_runners_loses_nothing_and_submits_nothing_twice(
    tmp_path: Path,
) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        emulator = batch_emulator()
        counted = Counted(emulator)
        write_lines(tmp_path / "in.jsonl", prompts(LINES // 5))
        shards = LINES // 5 // 2
        with BackgroundServer(counted) as served:
            env = {**os.environ, "ANTHROPIC_BASE_URL": served.base_url, "ANTHROPIC_API_KEY": DEFAULT_API_KEY}
            env.update(KEEL_HOME=str(tmp_path / "home"), KEEL_DATABASE_URL=server.url)
            args = ["batch", "run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")]
            args += ["--model", "claude-haiku-5-5", "--max-tokens", "50", "--shard-requests", "2", "--quiet"]
            args += ["--poll-min", "0.05", "--poll-max", "0.2", "--lease-seconds", "5"]
            runners = [Keel(args, env, tmp_path / f"runner{n}.log") for n in (1, 2)]
            ledger = PostgresLedger(server.url)
            joined = lambda: sum(len(ledger.runners(job.job_id)) for job in ledger.jobs()) == 2  # noqa: E731
            wait_until(joined, "both runners joined", *runners)
            ledger.close()
            counted.gate.set()
            restart = outage(server.stop, server.start, lambda: len(emulator.batches) >= shards // 3)
            outputs = [runner.finish(timeout=120) for runner in runners]
            restart.join()
        logs = "".join(outputs)
        out = read_jsonl(tmp_path / "out.jsonl")
        assert sorted(row["custom_id"] for row in out) == sorted(f"q{n}" for n in range(LINES // 5))
        assert {row["status"] for row in out} == {"succeeded"}
        assert len(emulator.batches) == shards  # no batch created twice
        assert submitted_ids(emulator) == Counter({row["custom_id"]: row["attempts"] for row in out})
        assert f"postgresql://keel:***@127.0.0.1:{server.port}/postgres unreachable" in logs
        assert "answers again" in logs and "s3cret-pg" not in logs
    finally:
        server.remove()
