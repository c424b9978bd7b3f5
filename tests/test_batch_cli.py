"""`keel batch` commands through the CLI, against a loopback emulator (the CLI builds its client from the
environment, as a user's shell would), with the default SQLite ledger and with `KEEL_DATABASE_URL`'s PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from batch_helpers import invoke, prompts, read_jsonl, write_lines
from pg_helpers import schema_url
from typer.testing import CliRunner

from keel.batch import open_ledger
from keel.cli import app
from keel.emulator import Emulator

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgres"])
def emulator(
    request: pytest.FixtureRequest, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Emulator]:
    """The served emulator, with the default SQLite ledger or with `KEEL_DATABASE_URL`'s PostgreSQL."""
    with ExitStack() as stack:
        if request.param == "postgres":
            monkeypatch.setenv("KEEL_DATABASE_URL", stack.enter_context(schema_url()))
        yield served_emulator


def run(*args: str, clock: Emulator | None = None) -> str:
    """Invoke the CLI, which must succeed; with `clock`, the batch clock moves meanwhile."""
    result = invoke(*args, clock=clock)
    assert result.exit_code == 0, result.output
    return result.output


def run_job(src: Path, out: Path, clock: Emulator | None = None) -> str:
    return run(
        "batch", "run", str(src), "--out", str(out), "--model", "claude-haiku-5-5", "--max-tokens", "50",
        "--poll-min", "0.01", "--poll-max", "0.05", "--quiet", clock=clock,
    )  # fmt: skip


def test_run_status_list_results(tmp_path: Path, emulator: Emulator) -> None:
    src = write_lines(tmp_path / "in.jsonl", [*prompts(4), "{oops"])
    out = tmp_path / "out.jsonl"
    text = run_job(src, out, clock=emulator)
    job = text.split("job ", 1)[1].split(":", 1)[0]
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 4 + ["rejected"]
    assert read_jsonl(tmp_path / "out.rejects.jsonl")[0]["line"] == 5
    assert "succeeded: 4" in text and "rejected: 1" in text and "claude-haiku-5-5" in text
    assert job in run("batch", "list")
    status = run("batch", "status", job)
    assert "done" in status and "succeeded: 4" in status
    again = tmp_path / "again.jsonl"
    run("batch", "results", job, "--out", str(again))
    assert again.read_text() == out.read_text()
    assert len(emulator.batches) == 1


def test_unknown_job_and_bad_input_are_clear(tmp_path: Path, emulator: Emulator) -> None:
    result = runner.invoke(app, ["batch", "status", "job_nope"])
    assert result.exit_code == 2 and "no job job_nope" in result.output
    result = runner.invoke(app, ["batch", "run", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output
    assert len(emulator.batches) == 0


def test_cancel_then_run_collects_and_stops(tmp_path: Path, emulator: Emulator) -> None:
    from keel import Client
    from keel.batch import BatchRunner, RunnerOptions
    from keel.batch.inputs import Defaults, read_items
    from keel.batch.runner import job_id_for

    src = write_lines(tmp_path / "in.jsonl", prompts(30))
    ledger = open_ledger()  # the one the CLI uses
    options = RunnerOptions(defaults=Defaults(model="claude-haiku-5-5", max_tokens=50))
    job = job_id_for(src, options)  # the job `keel batch run` will resume: submitted, then stopped mid-way
    ledger.create_job(job, str(src), options.fingerprint())
    ledger.add_inputs(job, read_items(src, options.defaults, options.shard_bytes, ledger))
    ledger.set_job_status(job, "running")
    shard = ledger.plan_shards(job, options.shard_requests, options.shard_bytes)[0]
    submitter = BatchRunner(Client(policy="background"), ledger, options)
    submitter.submit(job, shard)
    ledger.leave(submitter.runner.key)  # as a runner that stopped
    emulator.batches.advance(20)  # about a third of it has finished
    assert "canceling" in run("batch", "cancel", job)
    emulator.batches.advance(10)  # the cancel completes
    out = tmp_path / "out.jsonl"
    run_job(src, out)
    statuses = [row["status"] for row in read_jsonl(out)]
    assert "canceled" in statuses and "succeeded" in statuses and len(statuses) == 30
    assert len(emulator.batches) == 1  # nothing submitted after the cancel
    assert "canceled" in run("batch", "status", job)
    ledger.close()


def test_status_and_list_show_rounds_full_ids_per_job_shards_and_json(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("COLUMNS", "80")
    first = run_job(write_lines(tmp_path / "a.jsonl", prompts(3, "a")), tmp_path / "a.out.jsonl", clock=served_emulator)
    assert "rejects:" not in first
    served_emulator.inject("errored_share=0.5; error_type=overloaded_error", path="/v1/messages/batches", limit=1)
    src = write_lines(tmp_path / "b.jsonl", [*prompts(6, "b"), "{oops", {"prompt": "x", "custom_id": "b0"}])
    text = run_job(src, tmp_path / "b.out.jsonl", clock=served_emulator)
    assert text.index("rejects: 2 input line(s) are not sent") < text.index("final:")
    assert re.search(
        r"round 1: canceled 0, errored 3, expired 0, processing 0, succeeded 3; round 2: .*succeeded 3", text
    )
    job = text.split("job ", 1)[1].split(":", 1)[0]
    shown = json.loads(run("batch", "status", job, "--json"))
    assert shown["status"] == "done" and shown["running"] is False
    assert [s["shard"] for s in shown["shards"]] == [1, 2] and [s["round"] for s in shown["shards"]] == [1, 2]
    first_round, retry_round = (s["counts"] for s in shown["shards"])
    assert first_round["errored"] == 3 and retry_round["errored"] == 0 and retry_round["succeeded"] == 3
    assert shown["final"] == {"succeeded": 6, "rejected": 2}
    status = run("batch", "status", job)
    assert "elapsed" not in status and "ETA" not in status
    assert re.search(r"\n *1 +1 +collected +0 +3 +3 +0 +0 *\n *2 +2 +collected +0 +3 +0 +0 +0 *\n", status)
    assert re.search(r"\n *total +1 +0 +3 +3 +0 +0 *\n *total +2 +0 +3 +0 +0 +0 *\n", status)
    assert "final: rejected: 2, succeeded: 6" in status
    for number, shard in enumerate(shown["shards"], 1):
        assert f"shard {number}: {shard['batch_id']}\n" in status  # whole at 80 columns
    listed = json.loads(run("batch", "list", "--json"))
    assert {row["job_id"] for row in listed} == {job, first.split("job ", 1)[1].split(":", 1)[0]}
    assert all(row["status"] == "done" and row["running"] is False for row in listed)


def test_adopt_takes_the_shard_number_within_the_job(tmp_path: Path, emulator: Emulator) -> None:
    from keel.batch import RunnerOptions
    from keel.batch.inputs import Defaults, read_items
    from keel.batch.runner import job_id_for

    ledger = open_ledger()  # the one the CLI uses
    options = RunnerOptions(defaults=Defaults(model="claude-haiku-5-5", max_tokens=50))
    jobs = []
    for name in ("a", "b"):  # job b's first shard is the ledger's second
        src = write_lines(tmp_path / f"{name}.jsonl", prompts(2, name))
        job = job_id_for(src, options)
        ledger.create_job(job, str(src), options.fingerprint())
        ledger.add_inputs(job, read_items(src, options.defaults, options.shard_bytes, ledger))
        shard_id = ledger.plan_shards(job, options.shard_requests, options.shard_bytes)[0].shard_id
        ledger.mark_submitting(shard_id, "elsewhere/1/gone", 60)
        ledger.release(shard_id, "elsewhere/1/gone")  # as a runner that stopped
        jobs.append(job)
    assert "shard 1 of job" in run("batch", "adopt", jobs[1], "--shard", "1", "--batch-id", "msgbatch_b")
    assert [(s.state, s.batch_id) for s in ledger.shards(jobs[1])] == [("submitted", "msgbatch_b")]
    assert [s.state for s in ledger.shards(jobs[0])] == ["submitting"]
    refused = invoke("batch", "adopt", jobs[1], "--shard", "2", "--batch-id", "msgbatch_c")
    assert refused.exit_code == 2 and "no shard 2 waiting" in refused.output
    ledger.close()
