"""The batch runner against the emulator, on each ledger (a SQLite file, the machine's PostgreSQL): validation,
sharding, resubmission, ordering, resume, cost."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_helpers import MODEL, Ledgers, emulator, prompts, read_jsonl, runner, write_lines

from keel._pricing import load_prices
from keel.batch import AmbiguousSubmission, SQLiteLedger, cost_report
from keel.batch.inputs import Defaults
from keel.emulator import client


def test_every_input_line_gets_exactly_one_result_in_input_order(tmp_path: Path, ledgers: Ledgers) -> None:
    lines = [
        {
            "custom_id": "batch-form",
            "params": {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        },
        {"prompt": "short form without an id [[keel:reply=derived]]"},
        "{not json",
        {"custom_id": "has space", "prompt": "x"},
        {"custom_id": "batch-form", "prompt": "duplicate id"},
        {"messages": [{"role": "user", "content": "messages form"}], "custom_id": "m1"},
        {"custom_id": "no-content"},
        {"prompt": "short form without an id [[keel:reply=derived]]"},
        {"custom_id": "big", "prompt": "y" * 5000},
        {"custom_id": "stop", "prompt": "Count [[keel:reply=one two STOP three]]", "max_tokens": 40},
    ]
    src = write_lines(tmp_path / "in.jsonl", lines)
    emu = emulator()
    run = runner(emu, ledgers(), shard_bytes=4000)
    job = run.run(src, tmp_path / "out.jsonl", tmp_path / "rejects.jsonl", tmp_path / "failures.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [row["line"] for row in out] == list(range(1, 11))  # one line per input line, in order
    statuses = {row["line"]: row["status"] for row in out}
    assert {n for n, s in statuses.items() if s == "rejected"} == {3, 4, 5, 7, 9}
    rejects = {row["line"]: row["reason"] for row in read_jsonl(tmp_path / "rejects.jsonl")}
    assert "not valid JSON" in rejects[3] and "must match" in rejects[4] and "duplicate custom_id" in rejects[5]
    assert "missing field" in rejects[7] and "over the 4,000-byte limit" in rejects[9]
    derived = [row["custom_id"] for row in out if row["line"] in (2, 8)]
    assert derived[0].startswith("req-") and derived[1] == derived[0] + "-2"
    succeeded = [row for row in out if row["status"] == "succeeded"]
    assert len(succeeded) == 5 and all(row["message"]["type"] == "message" for row in succeeded)
    assert next(row for row in out if row["custom_id"] == "stop")["stop_reason"] == "end_turn"
    accepted = [row["custom_id"] for row in out if row["status"] != "rejected"]
    assert len(set(accepted)) == len(accepted) == 5
    assert len(emu.batches) == 1 and job.startswith("job_")
    assert read_jsonl(tmp_path / "failures.jsonl") == []


def test_shards_respect_request_and_byte_limits(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(10))
    emu = emulator()
    run = runner(emu, ledgers(), shard_requests=3)
    job = run.run(src, tmp_path / "out.jsonl")
    assert len(emu.batches) == 4
    assert [s.requests for s in run.ledger.shards(job)] == [3, 3, 3, 1]
    assert [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")] == ["succeeded"] * 10
    emu2 = emulator()
    runner(emu2, ledgers("ledger2"), shard_bytes=400).run(src, tmp_path / "out2.jsonl")
    assert len(emu2.batches) > 4


def test_retryable_errors_and_expiry_are_resubmitted_invalid_requests_are_final(
    tmp_path: Path, ledgers: Ledgers
) -> None:
    lines = [*prompts(20), {"custom_id": "too-long", "prompt": "x", "max_tokens": 999_999}]
    src = write_lines(tmp_path / "in.jsonl", lines)
    emu = emulator()
    emu.inject("errored_share=0.3; error_type=overloaded_error", path="/v1/messages/batches", limit=1)
    emu.inject("expired_share=0.2", path="/v1/messages/batches", limit=1)
    run = runner(emu, ledgers())
    run.run(src, tmp_path / "out.jsonl", failures=tmp_path / "failures.jsonl")
    out = {row["custom_id"]: row for row in read_jsonl(tmp_path / "out.jsonl")}
    assert all(out[f"q{n}"]["status"] == "succeeded" for n in range(20))
    assert {row["attempts"] for row in out.values()} >= {1, 2}  # some went round again, in a follow-up batch
    assert len(emu.batches) >= 2
    failed = out["too-long"]
    assert failed["status"] == "errored" and failed["attempts"] == 1  # never resubmitted
    assert failed["error"]["type"] == "invalid_request_error" and "max_tokens" in failed["error"]["message"]
    assert [row["custom_id"] for row in read_jsonl(tmp_path / "failures.jsonl")] == ["too-long"]


def test_attempts_are_bounded(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(3))
    emu = emulator(batch_stall=True)
    run = runner(emu, ledgers(), max_attempts=2)
    run.run(src, tmp_path / "out.jsonl")
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [(row["status"], row["attempts"]) for row in out] == [("expired", 2)] * 3
    assert len(emu.batches) == 2


def test_rerun_resumes_without_submitting_again(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(5))
    emu = emulator()
    first = runner(emu, ledgers()).run(src, tmp_path / "out.jsonl")
    before = (tmp_path / "out.jsonl").read_text()
    second = runner(emu, ledgers()).run(src, tmp_path / "out.jsonl")
    assert first == second and len(emu.batches) == 1
    assert (tmp_path / "out.jsonl").read_text() == before


def test_a_lost_create_is_reconciled_not_resubmitted(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(4))
    emu = emulator()
    run = runner(emu, ledgers())
    job, shard = _half_submitted(run, src)
    sdk = client(emu)
    sdk.post(
        "/v1/messages/batches",
        cast_to=object,
        content=b"".join(run.ledger.shard_body(shard)),
        options={"headers": {"content-type": "application/json"}},
    )  # the create the runner never heard back from
    sdk.messages.batches.create(
        requests=[
            {
                "custom_id": "other",
                "params": {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            }
        ]
    )
    assert len(emu.batches) == 2
    assert run.run(src, tmp_path / "out.jsonl") == job
    assert len(emu.batches) == 2  # adopted, not submitted again
    assert [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")] == ["succeeded"] * 4


def test_an_ambiguous_lost_create_stops_and_says_how_to_choose(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    emu = emulator()
    run = runner(emu, ledgers())
    run.run(write_lines(tmp_path / "first.jsonl", prompts(3, "f")), tmp_path / "first.out.jsonl")  # its shard: 1
    job, shard = _half_submitted(run, src)
    assert shard == 2  # in the ledger; the job's first shard, which `keel batch adopt --shard 1` takes
    sdk = client(emu)
    for _ in range(2):
        sdk.post(
            "/v1/messages/batches",
            cast_to=object,
            content=b"".join(run.ledger.shard_body(shard)),
            options={"headers": {"content-type": "application/json"}},
        )
    with pytest.raises(
        AmbiguousSubmission, match=rf"shard 1 of job {job} .* keel batch adopt {job} --shard 1 --batch-id"
    ):
        run.run(src, tmp_path / "out.jsonl")
    assert len(emu.batches) == 3


def test_results_of_a_wrong_batch_are_refused(tmp_path: Path, ledgers: Ledgers) -> None:
    from keel.batch import ForeignResults

    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    emu = emulator()
    run = runner(emu, ledgers())
    _, shard = _half_submitted(run, src)
    wrong = client(emu).messages.batches.create(
        requests=[
            {
                "custom_id": f"z{n}",
                "params": {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            }
            for n in range(2)
        ]
    )
    run.adopt(shard, wrong.id)
    with pytest.raises(Exception) as caught:
        run.run(src, tmp_path / "out.jsonl")
    assert isinstance(caught.value.__cause__ or caught.value, ForeignResults) or "not in this shard" in str(
        caught.value
    )


def test_cancel_reports_canceled_and_keeps_what_finished(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(40))
    emu = emulator()
    run = runner(emu, ledgers())
    job, _ = _half_submitted(run, src)
    run.submit(job, run.ledger.shards(job)[0])
    emu.batches.advance(40)  # part of the batch has finished
    run.ledger.set_job_status(job, "canceling")
    batch_id = run.ledger.shards(job)[0].batch_id
    assert batch_id is not None
    run.cancel_batch(batch_id)
    run.run(src, tmp_path / "out.jsonl")
    statuses = [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")]
    assert set(statuses) == {"succeeded", "canceled"} and len(statuses) == 40
    assert run.ledger.job(job).status == "canceled"  # type: ignore[union-attr]


def test_cost_report_batch_is_half_of_standard(tmp_path: Path, ledgers: Ledgers) -> None:
    lines = [
        *prompts(6),
        {"custom_id": "opus", "prompt": "x", "model": "claude-opus-5"},
        {"custom_id": "bad", "prompt": "x", "model": "claude-nope"},
    ]
    src = write_lines(tmp_path / "in.jsonl", lines)
    emu = emulator()
    run = runner(emu, ledgers())
    job = run.run(src, tmp_path / "out.jsonl")
    rows = {row.model: row for row in cost_report(run.ledger, job)}
    assert set(rows) == {MODEL, "claude-opus-5"}  # the errored request costs nothing and is not listed
    out = [r for r in read_jsonl(tmp_path / "out.jsonl") if r["status"] == "succeeded"]
    prices = load_prices()
    for model, row in rows.items():
        usages = [r["message"]["usage"] for r in out if r["message"]["model"] == model]
        assert row.requests == len(usages)
        assert row.usage.input_tokens == sum(u["input_tokens"] for u in usages)
        assert row.usage.output_tokens == sum(u["output_tokens"] for u in usages)
        assert row.standard_usd == pytest.approx(sum(prices.cost(model, u) or 0 for u in usages))
        assert row.batch_usd == pytest.approx(row.standard_usd / 2)  # type: ignore[operator]
        assert row.saving_usd == pytest.approx(row.batch_usd)


def test_every_api_call_has_its_records(tmp_path: Path, ledgers: Ledgers) -> None:
    from keel import Client
    from keel._records import read_records
    from keel.batch import BatchRunner, RunnerOptions

    src = write_lines(tmp_path / "in.jsonl", prompts(3))
    emu = emulator()
    keel = Client(client(emu), policy="background", records=tmp_path / "records.jsonl")
    run = BatchRunner(
        keel,
        ledgers(),
        RunnerOptions(defaults=Defaults(model=MODEL, max_tokens=50), poll_min=0, poll_max=0),
        sleep=lambda _: emu.batches.advance(3600),
    )
    run.run(src, tmp_path / "out.jsonl")
    keel.close()  # writes what the sink was still gathering
    records = read_records(tmp_path / "records.jsonl")
    served = [entry.request_id for entry in emu.access_log.entries()]
    assert sorted(r["request_id"] for r in records if r["kind"] == "attempt") == sorted(served)
    names = [r["outcome"] for r in records if r["kind"] == "call"]
    assert names[0] == "batches.create" and "batches.retrieve" in names and names[-1] == "batches.results"


def _half_submitted(run, src: Path) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """A job prepared and planned, its first shard marked as being submitted (as if killed mid-create)."""
    from keel.batch.inputs import read_items
    from keel.batch.runner import job_id_for

    job = job_id_for(src, run.options)
    run.ledger.create_job(job, str(src), run.options.fingerprint())
    run.ledger.add_inputs(job, read_items(src, run.options.defaults, run.options.shard_bytes, run.ledger))
    run.ledger.set_job_status(job, "running")
    shard = run.ledger.plan_shards(job, run.options.shard_requests, run.options.shard_bytes)[0].shard_id
    run.ledger.mark_submitting(shard, run.runner.key, 60)
    run.ledger.release(shard, run.runner.key)  # as a runner killed then, its lease expired
    return job, shard


def test_a_reopened_ledger_holds_the_whole_job(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    emu = emulator()
    job = runner(emu, ledgers()).run(src, tmp_path / "out.jsonl")
    ledger = ledgers()  # as a later process sees it
    assert ledger.job(job).status == "done"  # type: ignore[union-attr]
    assert ledger.state_counts(job) == {"succeeded": 2}
    (shard,) = ledger.shards(job)
    batch = client(emu).messages.batches.retrieve(shard.batch_id or "")
    assert shard.state == "collected" and shard.counts == batch.request_counts.model_dump()
    assert sum(shard.counts.values()) == shard.requests == 2


def test_a_sqlite_ledger_of_another_schema_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # a ledger as an older keel wrote it: no schema version
        conn.execute("CREATE TABLE items (job_id TEXT, custom_id TEXT, cache_write_tokens INTEGER)")
    with pytest.raises(ValueError, match="schema version 0, written by another keel version"):
        SQLiteLedger(path)
    previous = tmp_path / "v2.sqlite3"
    with sqlite3.connect(previous) as conn:  # a ledger of the version before runners and leases
        conn.execute("CREATE TABLE shards (shard_id INTEGER PRIMARY KEY)")
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(ValueError, match=r"schema version 2, .* \(this one uses version 3\)"):
        SQLiteLedger(previous)
    fresh = SQLiteLedger(tmp_path / "new.sqlite3")
    fresh.close()
    SQLiteLedger(tmp_path / "new.sqlite3").close()  # this version's own ledger opens again


def test_a_postgres_ledger_of_another_schema_version_is_refused_with_a_clear_error() -> None:
    import psycopg
    from pg_helpers import schema_url

    from keel.batch.postgres import PostgresLedger

    with schema_url() as url:
        PostgresLedger(url).close()  # created on first use, at this keel's version
        PostgresLedger(url).close()  # and opened again
        with psycopg.connect(url, autocommit=True) as conn:  # as an older keel would have left it
            conn.execute("UPDATE keel_schema SET version = 2 WHERE component = 'batch ledger'")  # before leases
        with pytest.raises(ValueError, match="a batch ledger of schema version 2, written by another keel version"):
            PostgresLedger(url)
