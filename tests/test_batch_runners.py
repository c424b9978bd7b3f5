"""Several runners on one job, on each ledger: they share it (every input once, no shard submitted twice), a runner
with nothing to claim waits and says for whom, a killed runner's shards are taken over once its lease expires, and
`keel batch list` / `status` show who holds what and tell a running job from a stopped one."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from batch_helpers import Ledgers, emulator, invoke, prompts, read_jsonl, runner, write_lines

from keel.batch import BatchRunner, SQLLedger
from keel.batch.inputs import read_items
from keel.batch.leases import RunnerId
from keel.batch.runner import job_id_for
from keel.emulator import Emulator, client


def submitted_ids(emu: Emulator) -> Counter[str]:
    """How many times the emulator was sent each custom_id, over every batch it created."""
    sdk = client(emu)
    sent: Counter[str] = Counter()
    for batch in sdk.messages.batches.list(limit=100):
        sent.update(result.custom_id for result in sdk.messages.batches.results(batch.id))
    return sent


def real_sleep(emu: Emulator) -> object:
    """A runner's wait: a moment of real time (leases run on the database's clock), and an hour of batch time."""

    def sleep(_: float) -> None:
        time.sleep(0.02)
        emu.batches.advance(3600)

    return sleep


def test_two_runners_share_a_job_every_input_once_and_no_shard_twice(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(8))
    emu = emulator()
    emu.inject("latency_ms=150", path="/v1/messages/batches", limit=4)  # a create takes a while: the other one helps
    runners = [runner(emu, ledgers(), shard_requests=2, lease_seconds=5) for _ in range(2)]
    start = threading.Barrier(2)
    jobs: list[str] = []

    def run(each: BatchRunner) -> None:
        start.wait()
        jobs.append(each.run(src, tmp_path / "out.jsonl"))

    threads = [threading.Thread(target=run, args=(each,)) for each in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(jobs) == 2 and jobs[0] == jobs[1]
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [row["custom_id"] for row in out] == [f"q{n}" for n in range(8)]
    assert {(row["status"], row["attempts"]) for row in out} == {("succeeded", 1)}
    assert len(emu.batches) == 4 and submitted_ids(emu) == Counter(f"q{n}" for n in range(8))
    shards = runners[0].ledger.shards(jobs[0])
    assert {shard.state for shard in shards} == {"collected"}
    assert {shard.lease_owner for shard in shards} == {each.runner.key for each in runners}  # both did some


def held_elsewhere(emu: Emulator, ledger: SQLLedger, src: Path, lease: float) -> tuple[str, RunnerId]:
    """A job of three shards, as a runner on another host leaves it when killed: shard 1 submitted, shard 2's create
    sent but never recorded, shard 3 planned; all three leased to it for `lease` seconds more."""
    other = runner(emu, ledger, shard_requests=2, lease_seconds=lease)
    dead = other.runner = RunnerId("elsewhere", 4242, "dead")
    job = job_id_for(src, other.options)
    ledger.create_job(job, str(src), other.options.fingerprint())
    ledger.add_inputs(job, read_items(src, other.options.defaults, other.options.shard_bytes, ledger))
    ledger.set_job_status(job, "running")
    ledger.join(job, dead.key, lease)
    first, second, _ = ledger.plan_shards(job, 2, other.options.shard_bytes)
    for _ in range(3):
        ledger.claim(job, dead.key, lease)
    other.submit(job, first)
    ledger.mark_submitting(second.shard_id, dead.key, lease)
    client(emu).post(
        "/v1/messages/batches",
        cast_to=object,
        content=b"".join(ledger.shard_body(second.shard_id)),
        options={"headers": {"content-type": "application/json"}},
    )  # the create whose response the killed runner never recorded
    return job, dead


def test_a_runner_with_nothing_to_claim_waits_says_for_whom_and_takes_over_when_the_lease_expires(
    tmp_path: Path, ledgers: Ledgers, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(6))
    emu = emulator()
    job, dead = held_elsewhere(emu, ledgers(), src, lease=1.0)
    helper = runner(emu, ledgers(), shard_requests=2, lease_seconds=5)
    helper.sleep = real_sleep(emu)  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="keel.batch"):
        assert helper.run(src, tmp_path / "out.jsonl") == job
    assert "runner elsewhere pid 4242 is on this job too" in caplog.text
    assert "waiting: runner elsewhere pid 4242 holds shards 1, 2, 3" in caplog.text
    assert "taking over shard 1 (submitted) from runner elsewhere pid 4242, whose lease expired" in caplog.text
    assert "taking over shard 2 (submitting)" in caplog.text
    out = read_jsonl(tmp_path / "out.jsonl")
    assert {(row["status"], row["attempts"]) for row in out} == {("succeeded", 1)} and len(out) == 6
    assert len(emu.batches) == 3 and submitted_ids(emu) == Counter(f"q{n}" for n in range(6))  # shard 2 adopted
    assert {shard.lease_owner for shard in helper.ledger.shards(job)} == {helper.runner.key}
    assert dead.key not in {live.runner.key for live in helper.ledger.runners(job)}


def test_list_and_status_show_who_holds_what_and_a_job_whose_leases_expired_as_stopped(
    tmp_path: Path, ledgers: Ledgers, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(6))
    ledger = ledgers()
    job, _ = held_elsewhere(emulator(), ledger, src, lease=1.5)
    if ledgers.kind == "postgres":  # type: ignore[attr-defined]
        monkeypatch.setenv("KEEL_DATABASE_URL", ledgers.urls["ledger"])  # type: ignore[attr-defined]
        where: tuple[str, ...] = ()
    else:
        monkeypatch.delenv("KEEL_DATABASE_URL", raising=False)
        where = ("--ledger", ledger.where)
    listed = invoke("batch", "list", *where).output
    assert job in listed and "running" in listed and "elsewhere pid 4242" in listed
    status = invoke("batch", "status", job, *where).output
    assert f"job {job}: running" in status
    assert "runner elsewhere pid 4242: holds shards 1, 2, 3; lease" in status
    assert status.count("elsewhere pid 4242") == 4  # and in the runner column of each shard
    time.sleep(1.6)  # its leases expire: nobody runs the job any more
    listed = invoke("batch", "list", *where).output
    assert "stopped" in listed and "running" not in listed and "4242" not in listed
    status = invoke("batch", "status", job, *where).output
    assert f"job {job}: stopped (no runner: the leases of its last runners expired" in status
    assert "elsewhere pid 4242 (lease expired)" in status
