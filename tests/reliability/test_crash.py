"""Crash: the batch runner (`keel batch run`) and the bulk real-time runner (`keel run`) killed with SIGKILL at random
points, on SQLite and on PostgreSQL ledgers: 20 points on each ledger under `make soak`; in `make test`, 5 points a
runner, on SQLite and PostgreSQL in turn.

A kill point is the n-th thing the emulator saw happen (a batch made, a create or a download answered, a message
arriving or answered; not polls, whose number depends on timing), n drawn at random from its own slice of the run (so
the points spread from the first submit to the last download), plus a random moment more. Even points kill a lone
runner and start it again; odd points start a second runner on the same job and kill the first, and the survivor
finishes. After each restart:

- the output holds each input line exactly once, every one succeeded;
- the emulator created one batch per shard: none twice;
- what the emulator was sent for each line (its batch results, or the /v1/messages requests that reached it) is what
  the output reports as that line's attempts: nothing was billed that the results do not show. One exception, stated
  by the assertion: a real-time request the kill cut between the ledger's "sending" and the wire counts as an attempt
  that never reached the emulator.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import prompts, read_jsonl, write_lines
from crash_helpers import Counted, Keel, batch_emulator, wait_until
from pg_helpers import schema_url
from reliability_helpers import SOAK, scale
from test_batch_runners import submitted_ids

from keel.batch import open_ledger
from keel.bulk import RUN_LEDGERS
from keel.emulator import DEFAULT_API_KEY, Emulator
from keel.emulator.server import BackgroundServer

POINTS = scale(5, 20)
LEASE = "0.5"  # a killed runner's work is taken over this long after the kill
BATCH_LINES, SHARD = 6, 2  # three shards
BULK_LINES, CONCURRENCY = 8, 2
KINDS = ("sqlite", "postgres")
# (point, ledger): every point on each ledger under soak; else alone and paired, on each ledger, among 5 points
CASES = [(point, kind) for point in range(POINTS) for kind in KINDS if SOAK or kind == KINDS[point // 2 % 2]]


@dataclass
class Job:
    """One kill point's job: the emulator (counted), the environment a shell gives `keel`, the command's arguments."""

    emulator: Emulator
    counted: Counted
    env: dict[str, str]
    args: list[str]
    folder: Path
    runs: int = 0

    def start(self) -> Keel:
        self.runs += 1
        return Keel(self.args, self.env, self.folder / f"run{self.runs}.log")

    def seen(self) -> int:
        """The events of the job the emulator saw so far: batches created, messages arrived, and the answers it logged
        (but polls, whose number depends on timing: a run sees the same count of events however fast it goes)."""
        polls = [e for e in self.emulator.access_log.entries() if e.method == "GET" and e.path.count("/") == 4]
        logged = len(self.emulator.access_log.entries()) - len(polls)
        return len(self.emulator.batches) + sum(self.counted.sent.values()) + logged


@pytest.fixture
def job(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Job]]:
    """Makes a job in a folder of its own, its ledger on the kind under test (`request.param`)."""
    with ExitStack() as stack:

        def make(point: int, args: list[str], emulator: Emulator) -> Job:
            folder = tmp_path / f"point{point}"
            folder.mkdir()
            counted = Counted(emulator)
            server = stack.enter_context(BackgroundServer(counted))
            env = {**os.environ, "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": DEFAULT_API_KEY}
            env["KEEL_HOME"] = str(folder / "home")
            env.pop("KEEL_DATABASE_URL", None)
            if request.param == "postgres":
                env["KEEL_DATABASE_URL"] = stack.enter_context(schema_url())
            for name in ("KEEL_HOME", "KEEL_DATABASE_URL"):  # this process reads the same ledger
                monkeypatch.setenv(name, env[name]) if name in env else monkeypatch.delenv(name, raising=False)
            inputs = folder / "in.jsonl"
            return Job(emulator, counted, env, [*args, str(inputs), "--out", str(folder / "out.jsonl")], folder)

        yield make


def kill_point(point: int, events: int) -> tuple[int, float]:
    """The n-th event to kill after (drawn from the point's slice of 1..events) and the moment more to wait."""
    rng = random.Random(point)
    low = 1 + point * events // POINTS
    high = max(low, (point + 1) * events // POINTS)
    return rng.randint(low, high), rng.uniform(0, 0.05)


def crash(job: Job, point: int, events: int, ledger: Callable[[], Any], state: Callable[[Any], object]) -> str:
    """Run the point's job and SIGKILL a runner at its point: on even points alone, then start it again; on odd ones
    beside a second runner started with it, which finishes the job. Returns the output of both runs.

    `ledger` opens the job's ledger; `state` reads from it where the kill found the job (printed, and `-rP` shows
    it)."""

    def peek(read: Callable[[Any], Any]) -> Any:
        opened = ledger()
        try:
            return read(opened)
        finally:
            opened.close()

    def runners(opened: Any) -> int:
        return sum(len(opened.runners(each.job_id)) for each in opened.jobs())

    victim = job.start()
    survivor = job.start() if point % 2 else None
    wait_until(lambda: peek(runners) == (2 if survivor else 1), "the runners joined the job", victim)
    job.counted.gate.set()
    nth, moment = kill_point(point, events)
    wait_until(lambda: job.seen() >= nth, f"event {nth}", victim)
    time.sleep(moment)
    assert victim.running(), f"the job ended before its kill point (event {nth} + {moment:.2f} s)"
    victim.kill()
    where = peek(state)
    print(f"point {point}: killed at event {nth} + {moment:.3f} s {'beside another' if survivor else 'alone'}: {where}")
    return (survivor or job.start()).finish() + victim.log.read_text()


@pytest.mark.parametrize(("point", "job"), CASES, indirect=["job"])
def test_the_batch_runner_killed_at_a_random_point_loses_nothing_and_submits_nothing_twice(
    job: Callable[..., Job], point: int
) -> None:
    args = ["batch", "run", "--model", "claude-haiku-5-5", "--max-tokens", "50", "--shard-requests", str(SHARD)]
    args += ["--poll-min", "0.05", "--poll-max", "0.2", "--quiet", "--lease-seconds", LEASE]
    made = job(point, args, batch_emulator())
    write_lines(made.folder / "in.jsonl", prompts(BATCH_LINES))

    def shards(ledger: Any) -> Counter[str]:
        return Counter(shard.state for job in ledger.jobs() for shard in ledger.shards(job.job_id))

    # 3 creates seen twice (made, answered), 3 downloads: 9 events in a run
    output = crash(made, point, 8, open_ledger, shards)
    assert point % 2 == 0 or "is on this job too" in output
    out = read_jsonl(made.folder / "out.jsonl")
    assert sorted(row["custom_id"] for row in out) == [f"q{n}" for n in range(BATCH_LINES)]
    assert {row["status"] for row in out} == {"succeeded"}
    assert len(made.emulator.batches) == BATCH_LINES // SHARD  # no batch created twice
    assert submitted_ids(made.emulator) == Counter({row["custom_id"]: row["attempts"] for row in out})


@pytest.mark.parametrize(("point", "job"), CASES, indirect=["job"])
def test_the_bulk_runner_killed_at_a_random_point_loses_nothing_and_bills_nothing_unreported(
    job: Callable[..., Job], point: int
) -> None:
    args = ["run", "--model", "claude-haiku-5-5", "--max-tokens", "50", "--concurrency", str(CONCURRENCY)]
    emulator = Emulator()
    emulator.inject("latency_ms=100", path="/v1/messages")  # every call slow: a kill finds calls in flight
    made = job(point, [*args, "--quiet", "--lease-seconds", LEASE], emulator)
    lines = [{"custom_id": f"q{n}", "prompt": f"Question {n} [[keel:words=5]]"} for n in range(BULK_LINES)]
    write_lines(made.folder / "in.jsonl", lines)
    cut: set[str] = set()  # the lines in flight at the kill

    def items(ledger: Any) -> Counter[str]:
        rows = [row for job in ledger.jobs() for row in ledger.items_in_order(job.job_id)]
        cut.update(row["custom_id"] for row in rows if row["state"] == "sending")
        return Counter(row["state"] for row in rows)

    output = crash(made, point, 2 * BULK_LINES - 1, RUN_LEDGERS.open, items)  # each request seen twice: sent, answered
    assert point % 2 == 0 or "is on this job too" in output
    out = read_jsonl(made.folder / "out.jsonl")
    assert [row["custom_id"] for row in out] == [f"q{n}" for n in range(BULK_LINES)]  # each exactly once, in order
    assert {row["status"] for row in out} == {"succeeded"}
    log = [e for e in made.emulator.access_log.entries() if e.method == "POST" and e.path == "/v1/messages"]
    assert len(log) == sum(made.counted.sent.values())  # the emulator's own log agrees with the count per line
    assert {row["request_id"] for row in out} <= {e.request_id for e in log if e.status == 200}
    for row in out:
        sent, attempts = made.counted.sent[row["custom_id"]], row["attempts"]
        if row["custom_id"] in cut:  # its last send may have been cut before the wire
            assert attempts - 1 <= sent <= attempts, row
        else:
            assert sent == attempts, row
