"""Budgets on batch jobs: a shard is submitted only when its worst case (at batch prices) fits; the job stops cleanly
before one that could pass the budget and a higher budget resumes it; the dry run and the budget's stop on the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_helpers import MODEL, Ledgers, emulator, invoke, prompts, read_jsonl, runner, write_lines
from typer.testing import Result

from keel import BudgetExceeded, estimate_cost
from keel.batch import RunnerOptions, SQLLedger, preflight, spent_usd
from keel.batch.inputs import Defaults, accepted_items, read_items
from keel.batch.runner import job_id_for
from keel.emulator import Emulator


def test_the_preflight_of_a_batch_job_is_at_batch_prices(tmp_path: Path, ledgers: Ledgers) -> None:
    src = write_lines(tmp_path / "in.jsonl", [*prompts(4), "{oops"])
    run = runner(emulator(), ledgers())
    params = [item.params_json for item in accepted_items(src, Defaults(model=MODEL, max_tokens=100), 1 << 20)]
    estimate = run.preflight(src)
    assert estimate.requests == 4 and estimate.batch and estimate.max_output_tokens == 400
    assert estimate.high_usd == pytest.approx(estimate_cost(params).high_usd / 2)
    assert preflight(src, run.options, None) == estimate  # without a ledger: the input file, read only


def test_a_shard_that_could_pass_the_budget_is_not_submitted_and_a_higher_budget_resumes_the_job(
    tmp_path: Path, ledgers: Ledgers
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(6))
    emu = emulator()
    first = runner(emu, ledgers(), shard_requests=2)  # three shards, the same worst case each
    shard_worst = first.preflight(src).high_usd / 3
    first.options.budget_usd = shard_worst * 1.05  # one shard at a time, and not a second once one is spent
    with pytest.raises(BudgetExceeded) as stopped:
        first.run(src, tmp_path / "out.jsonl")
    assert len(emu.batches) == 1
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["succeeded"] * 2 + ["unsent"] * 4
    job = job_id_for(src, first.options)
    spent = spent_usd(first.ledger, job)
    assert 0 < spent == pytest.approx(stopped.value.spent_usd) and stopped.value.next_usd == pytest.approx(shard_worst)
    assert spent + shard_worst > first.options.budget_usd >= spent
    assert first.ledger.job(job).status == "stopped"  # type: ignore[union-attr]

    again = runner(emu, ledgers(), shard_requests=2, budget_usd=shard_worst * 1.05)  # as a later process
    with pytest.raises(BudgetExceeded):  # what was spent counts: the same budget sends nothing more
        again.run(src, tmp_path / "out.jsonl")
    assert len(emu.batches) == 1

    more = runner(emu, ledgers(), shard_requests=2, budget_usd=shard_worst * 3)
    more.run(src, tmp_path / "out.jsonl")
    assert [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")] == ["succeeded"] * 6
    assert len(emu.batches) == 3  # one batch per shard over the three runs: nothing submitted twice
    assert spent_usd(more.ledger, job) <= shard_worst * 3


def half_submitted(tmp_path: Path, emu: Emulator, ledger: SQLLedger) -> tuple[Path, float]:
    """A job of two shards as a run killed after submitting the first leaves it; the worst case of a shard."""
    src = write_lines(tmp_path / "in.jsonl", prompts(4))
    first = runner(emu, ledger, shard_requests=2)
    job = job_id_for(src, first.options)
    first.ledger.create_job(job, str(src), first.options.fingerprint())
    first.ledger.add_inputs(job, read_items(src, first.options.defaults, first.options.shard_bytes, first.ledger))
    first.submit(job, first.ledger.plan_shards(job, 2, first.options.shard_bytes)[0])
    first.ledger.leave(first.runner.key)  # its lease expired
    return src, first.preflight(src).high_usd / 2


def test_a_batch_an_earlier_run_left_in_flight_is_held_against_the_budget_until_collected(
    tmp_path: Path, ledgers: Ledgers
) -> None:
    emu = emulator()
    src, shard_worst = half_submitted(tmp_path, emu, ledgers("held"))
    resumed = runner(emu, ledgers("held"), shard_requests=2, budget_usd=shard_worst * 1.5)
    resumed.run(src, tmp_path / "out.jsonl")  # room for one worst case: the second shard waits for the first
    assert [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")] == ["succeeded"] * 4
    served = [(entry.method, entry.path) for entry in emu.access_log.entries()]
    first_batch = resumed.ledger.shards(job_id_for(src, resumed.options))[0].batch_id
    second_create = max(n for n, call in enumerate(served) if call == ("POST", "/v1/messages/batches"))
    assert served.index(("GET", f"/v1/messages/batches/{first_batch}/results")) < second_create

    emu = emulator()
    src, shard_worst = half_submitted(tmp_path, emu, ledgers("below"))
    below = runner(emu, ledgers("below"), shard_requests=2, budget_usd=shard_worst / 2)
    with pytest.raises(BudgetExceeded):  # less than a shard's worst case: collected all the same, nothing more sent
        below.run(src, tmp_path / "out.jsonl")
    assert [row["status"] for row in read_jsonl(tmp_path / "out.jsonl")] == ["succeeded"] * 2 + ["unsent"] * 2
    assert len(emu.batches) == 1


def batch_run(src: Path, out: Path, *extra: str, clock: Emulator | None = None) -> Result:
    args = ["batch", "run", str(src), "--out", str(out), "--model", MODEL, "--max-tokens", "100", "--quiet"]
    return invoke(*args, "--poll-min", "0.01", "--poll-max", "0.05", "--shard-requests", "2", *extra, clock=clock)


def test_the_cli_dry_run_prints_the_batch_estimate_and_sends_and_writes_nothing(
    tmp_path: Path, served_emulator: Emulator
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(4))
    result = batch_run(src, tmp_path / "out.jsonl", "--dry-run", "--budget-usd", "2")
    assert result.exit_code == 0, result.output
    assert "pre-flight: 4 requests" in result.output and "at batch prices" in result.output
    assert "budget: $2.000000, $0.000000 spent so far" in result.output
    assert len(served_emulator.batches) == 0 and not (tmp_path / "home").exists()


def test_the_cli_stops_at_the_budget_with_status_3_and_resumes_with_a_higher_one(
    tmp_path: Path, served_emulator: Emulator
) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(4))
    out = tmp_path / "out.jsonl"
    options = RunnerOptions(defaults=Defaults(model=MODEL, max_tokens=100))
    budget = preflight(src, options, None).high_usd / 2 * 1.05  # a shard's worst case, and not a second once spent
    stopped = batch_run(src, out, "--budget-usd", str(budget), clock=served_emulator)
    assert stopped.exit_code == 3, stopped.output
    assert "stopped at the budget" in stopped.output and "higher --budget-usd" in stopped.output
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 2 + ["unsent"] * 2
    resumed = batch_run(src, out, "--budget-usd", "1", clock=served_emulator)
    assert resumed.exit_code == 0, resumed.output
    assert "pre-flight: 2 requests" in resumed.output
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 4 and len(served_emulator.batches) == 2


def test_the_cli_refuses_missing_credentials_before_any_ledger_entry(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    result = batch_run(write_lines(tmp_path / "in.jsonl", prompts(2)), tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY" in result.output
    assert not (tmp_path / "home").exists() and len(served_emulator.batches) == 0
