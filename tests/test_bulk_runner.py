"""The bulk runner in-process against the emulator: one result line per input line in input order, rejects by line
number, failures reported while the rest goes on, resume without sending twice, and the budget's stop and resume."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import MODEL, prompts, read_jsonl, write_lines

from keel import AsyncClient, BudgetExceeded, estimate_cost
from keel.batch import SQLiteLedger
from keel.batch.inputs import Defaults, read_items
from keel.bulk import BulkOptions, BulkProgress, BulkRunner, RunLedger, SQLRunLedger, run_id_for
from keel.emulator import Emulator, async_client

RunLedgers = Callable[..., SQLRunLedger]
"""The `run_ledgers` fixture (conftest.py): opens the test's run ledger of the kind under test."""


def bulk_runner(emulator: Emulator, ledger: SQLRunLedger, **options: Any) -> BulkRunner:
    on_progress = options.pop("on_progress", None)
    opts = BulkOptions(defaults=Defaults(model=MODEL, max_tokens=100), **options)
    return BulkRunner(AsyncClient(async_client(emulator)), ledger, opts, on_progress=on_progress)


def served(emulator: Emulator) -> int:
    return sum(1 for entry in emulator.access_log.entries() if entry.path == "/v1/messages" and entry.status == 200)


async def test_one_result_line_per_input_line_in_order_with_bad_lines_rejected_by_line_number(
    tmp_path: Path, keel_emulator: Emulator, run_ledgers: RunLedgers
) -> None:
    batch_form = {"custom_id": "full", "params": {"model": "claude-opus-5", "max_tokens": 20, "messages": []}}
    batch_form["params"]["messages"] = [{"role": "user", "content": "Hi [[keel:reply=Hello!]]"}]
    lines = [*prompts(3), "{not json", batch_form, {"custom_id": "q1", "prompt": "again"}, {"prompt": "no id"}]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    runner = bulk_runner(keel_emulator, run_ledgers(), concurrency=3)
    job = await runner.run(src, out, rejects)
    rows = read_jsonl(out)
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [row["status"] for row in rows] == ["succeeded"] * 3 + ["rejected", "succeeded", "rejected", "succeeded"]
    assert rows[4]["message"]["content"][0]["text"] == "Hello!" and rows[4]["message"]["model"] == "claude-opus-5"
    assert rows[6]["custom_id"].startswith("req-")  # derived from the content, as keel batch run does
    served_ids = {entry.request_id for entry in keel_emulator.access_log.entries()}
    assert {row["request_id"] for row in rows if row["status"] == "succeeded"} == served_ids
    assert all(row["attempts"] == 1 for row in rows if row["status"] == "succeeded")
    bad = read_jsonl(rejects)
    assert [(row["line"], row["custom_id"]) for row in bad] == [(4, None), (6, "q1")]
    assert "not valid JSON" in bad[0]["reason"] and "duplicate custom_id" in bad[1]["reason"]
    assert runner.ledger.job(job).status == "done"  # type: ignore[union-attr]


async def test_a_failed_call_is_an_errored_line_with_its_request_id_and_the_rest_go_on(
    tmp_path: Path, keel_emulator: Emulator, run_ledgers: RunLedgers
) -> None:
    keel_emulator.inject("status=529; retry_after_ms=5", limit=3)  # an overload storm, ridden out
    lines = [*prompts(4), {"custom_id": "huge", "prompt": "Hello", "max_tokens": 999_999}]
    src = write_lines(tmp_path / "in.jsonl", lines)
    await bulk_runner(keel_emulator, run_ledgers()).run(src, tmp_path / "out.jsonl")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["succeeded"] * 4 + ["errored"]
    error = rows[4]
    assert error["error"]["type"] == "invalid_request_error" and "max_tokens" in error["error"]["message"]
    assert error["request_id"].startswith("req_") and error["attempts"] == 1
    statuses = [entry.status for entry in keel_emulator.access_log.entries()]
    assert statuses.count(529) == 3 and statuses.count(200) == 4 and statuses.count(400) == 1


async def test_a_request_left_in_flight_by_a_kill_is_sent_again_and_counted_at_its_worst_case(
    tmp_path: Path, keel_emulator: Emulator, run_ledgers: RunLedgers, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(4))
    runner = bulk_runner(keel_emulator, run_ledgers())
    job = run_id_for(src, runner.options)  # the job as a run killed with q2's request in flight leaves it
    runner.ledger.create_job(job, str(src), runner.options.fingerprint())
    runner.ledger.add_inputs(job, read_items(src, runner.options.defaults, 1 << 20, runner.ledger))
    runner.ledger.mark_sending(job, "q2", "elsewhere/1/gone", 60)
    runner.ledger.leave("elsewhere/1/gone")  # killed: its lease expired
    (lost,) = [item for item in runner.ledger.open_items(job) if item.custom_id == "q2"]
    with caplog.at_level(logging.WARNING, logger="keel.bulk"):
        await runner.run(src, tmp_path / "out.jsonl")
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["succeeded"] * 4 and [row["attempts"] for row in rows] == [1, 1, 2, 1]
    assert served(keel_emulator) == 4
    warnings = "\n".join(record.getMessage() for record in caplog.records)
    assert "q2 (line 3) was in flight" in warnings and f"q2 sent again: request_id={rows[2]['request_id']}" in warnings
    prices = runner.client.settings.prices
    results = sum(prices.cost(MODEL, row["message"]["usage"]) or 0 for row in rows)
    unseen = estimate_cost([lost.params_json], prices).high_usd  # what the lost request may have cost
    assert runner.ledger.totals(job).cost_usd == pytest.approx(results + unseen)


async def test_the_budget_stops_the_job_cleanly_and_a_higher_budget_resumes_it(
    tmp_path: Path, keel_emulator: Emulator, run_ledgers: RunLedgers
) -> None:
    lines = [{"custom_id": f"q{n}", "prompt": f"Question {n} [[keel:words=50]]"} for n in range(8)]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    first = bulk_runner(keel_emulator, run_ledgers(), concurrency=2)
    worst = first.preflight(src).high_usd / 8  # every request has the same worst case
    first.options.budget_usd = worst * 3
    with pytest.raises(BudgetExceeded) as stopped:
        await first.run(src, out)
    sent = served(keel_emulator)
    assert 3 <= sent < 8
    rows = read_jsonl(out)  # written at the stop: every line, the ones not sent as "unsent"
    assert [row["status"] for row in rows] == ["succeeded"] * sent + ["unsent"] * (8 - sent)
    assert rows[-1]["error"]["type"] == "unsent" and "run the same command again" in rows[-1]["error"]["message"]
    job = run_id_for(src, first.options)
    spent = first.ledger.totals(job).cost_usd
    assert stopped.value.spent_usd == pytest.approx(spent) and spent <= worst * 3
    assert stopped.value.left_usd < stopped.value.next_usd == pytest.approx(worst)
    assert first.ledger.job(job).status == "stopped"  # type: ignore[union-attr]
    assert first.preflight(src).requests == 8 - sent  # what is left to send

    again = bulk_runner(
        keel_emulator, run_ledgers(), budget_usd=worst * 3
    )  # the same budget: the ledger's spend counts
    with pytest.raises(BudgetExceeded):
        await again.run(src, out)
    assert served(keel_emulator) == sent

    more = bulk_runner(keel_emulator, run_ledgers(), budget_usd=worst * 10)
    await more.run(src, out)
    rows = read_jsonl(out)
    assert [row["status"] for row in rows] == ["succeeded"] * 8 and all(row["attempts"] == 1 for row in rows)
    assert served(keel_emulator) == 8  # each request served exactly once over the three runs
    assert more.ledger.totals(job).cost_usd <= worst * 10


async def test_progress_counts_results_tokens_and_cost(tmp_path: Path, keel_emulator: Emulator) -> None:
    seen: list[tuple[int, int, float]] = []

    def show(progress: BulkProgress) -> None:
        seen.append((progress.done, progress.output_tokens, progress.cost_usd))

    src = write_lines(tmp_path / "in.jsonl", prompts(5))
    runner = bulk_runner(keel_emulator, RunLedger(tmp_path / "runs.sqlite3"), on_progress=show)
    job = await runner.run(src, tmp_path / "out.jsonl")
    assert [done for done, _, _ in seen] == [0, 1, 2, 3, 4, 5]
    totals = runner.ledger.totals(job)
    assert seen[-1][1] == totals.usage.output_tokens > 0 and seen[-1][2] == pytest.approx(totals.cost_usd)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert totals.cost_usd == pytest.approx(
        sum(runner.client.settings.prices.cost(MODEL, row["message"]["usage"]) or 0 for row in rows)
    )


def test_a_run_ledger_and_a_batch_ledger_refuse_each_others_files(tmp_path: Path) -> None:
    RunLedger(tmp_path / "runs.sqlite3").close()
    SQLiteLedger(tmp_path / "batches.sqlite3").close()
    with pytest.raises(ValueError, match="not a batch ledger"):
        SQLiteLedger(tmp_path / "runs.sqlite3")
    with pytest.raises(ValueError, match="not a run ledger"):
        RunLedger(tmp_path / "batches.sqlite3")


def test_two_runners_share_a_job_and_take_over_a_killed_runners_request_when_its_lease_expires(
    tmp_path: Path, keel_emulator: Emulator, run_ledgers: RunLedgers, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(10))
    keel_emulator.inject("latency_ms=30", path="/v1/messages")  # each call takes a while: the other runner helps
    runners = [bulk_runner(keel_emulator, run_ledgers(), concurrency=2, lease_seconds=1.5) for _ in range(2)]
    job = run_id_for(src, runners[0].options)  # a third runner was killed with q4's request in flight
    dead = run_ledgers()
    dead.create_job(job, str(src), runners[0].options.fingerprint())
    dead.add_inputs(job, read_items(src, runners[0].options.defaults, 1 << 20, dead))
    dead.join(job, "elsewhere/77/dead", 0.6)
    dead.mark_sending(job, "q4", "elsewhere/77/dead", 0.6)
    start = threading.Barrier(2)

    def run(runner: BulkRunner) -> None:
        start.wait()
        asyncio.run(runner.run(src, tmp_path / "out.jsonl"))

    threads = [threading.Thread(target=run, args=(runner,)) for runner in runners]
    with caplog.at_level(logging.INFO, logger="keel.bulk"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["custom_id"] for row in rows] == [f"q{n}" for n in range(10)]
    assert [row["attempts"] for row in rows] == [1] * 4 + [2] + [1] * 5
    assert {row["status"] for row in rows} == {"succeeded"}
    assert served(keel_emulator) == 10  # each sent once by the two runners (q4's first request was never served)
    assert "waiting: runner elsewhere pid 77 holds 1 request (taken over if its lease expires)" in caplog.text
    assert "q4 (line 5) was in flight when its runner stopped" in caplog.text
    owners = {
        row[0] for row in dead._read(lambda conn: conn.execute("SELECT DISTINCT lease_owner FROM run_items").fetchall())
    }
    assert owners == {runner.runner.key for runner in runners}  # both sent some
    dead.close()
