"""`keel run` through the CLI against a loopback emulator (the CLI builds its client from the environment, as a
user's shell would): the pre-flight estimate, the dry run, missing credentials, the budget's stop and resume, and the
run ledger on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_helpers import prompts, read_jsonl, write_lines
from keel_helpers import canary_key
from pg_helpers import schema_url
from typer.testing import CliRunner, Result

from keel.emulator import Emulator

runner = CliRunner()
MODEL = "claude-haiku-5-5"


def keel_run(src: Path, out: Path, *extra: str) -> Result:
    from keel.cli import app

    args = ["run", str(src), "--out", str(out), "--model", MODEL, "--max-tokens", "100", *extra]
    return runner.invoke(app, args)


def test_run_prints_the_preflight_writes_the_results_and_sums_up(tmp_path: Path, served_emulator: Emulator) -> None:
    src = write_lines(tmp_path / "in.jsonl", [*prompts(4), "{oops"])
    out = tmp_path / "out.jsonl"
    result = keel_run(src, out, "--quiet", "--concurrency", "2")
    assert result.exit_code == 0, result.output
    assert "pre-flight: 4 requests" in result.output and "at standard prices" in result.output
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 4 + ["rejected"]
    assert read_jsonl(tmp_path / "out.rejects.jsonl")[0]["line"] == 5
    assert "4/4 done, 0 errored" in result.output and "out tokens" in result.output  # the --quiet log line
    assert "succeeded: 4" in result.output and "rejected: 1" in result.output
    assert (tmp_path / "home" / "runs.sqlite3").exists()
    again = keel_run(src, out, "--quiet")  # the same job: nothing left to send
    assert again.exit_code == 0 and "pre-flight: 0 requests" in again.output
    assert len(served_emulator.access_log.entries()) == 4


def test_the_progress_bar_shows_rate_eta_tokens_and_cost(tmp_path: Path, served_emulator: Emulator) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(3))
    result = keel_run(src, tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output
    for shown in ("3/3", "0 errored", "/s, ETA", "in /", "out tokens, $0.0000"):
        assert shown in result.output


def test_a_dry_run_prints_the_estimate_and_sends_and_writes_nothing(tmp_path: Path, served_emulator: Emulator) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(5))
    result = keel_run(src, tmp_path / "out.jsonl", "--dry-run", "--budget-usd", "0.5")
    assert result.exit_code == 0, result.output
    assert "pre-flight: 5 requests" in result.output and "500 output tokens" in result.output
    assert "budget: $0.500000, $0.000000 spent so far" in result.output
    assert served_emulator.access_log.entries() == []
    assert not (tmp_path / "home").exists() and not (tmp_path / "out.jsonl").exists()


def test_missing_credentials_are_one_line_naming_the_variables_before_any_ledger_entry(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no profile on disk either
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    result = keel_run(src, tmp_path / "out.jsonl", "--ledger", str(tmp_path / "runs.sqlite3"))
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "ANTHROPIC_API_KEY" in line and "ANTHROPIC_BASE_URL" in line
    assert not (tmp_path / "runs.sqlite3").exists() and not (tmp_path / "home").exists()
    assert served_emulator.access_log.entries() == []


def test_the_budget_stops_with_status_3_and_a_higher_budget_resumes(tmp_path: Path, served_emulator: Emulator) -> None:
    lines = [{"custom_id": f"q{n}", "prompt": f"Question {n} [[keel:words=50]]"} for n in range(6)]
    src = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    stopped = keel_run(src, out, "--quiet", "--budget-usd", "0.0001", "--concurrency", "1")
    assert stopped.exit_code == 3, stopped.output
    assert "stopped at the budget" in stopped.output and "left of $0.000100" in stopped.output
    assert "higher --budget-usd" in stopped.output
    statuses = [row["status"] for row in read_jsonl(out)]
    sent = statuses.count("succeeded")
    assert 0 < sent < 6 and statuses == ["succeeded"] * sent + ["unsent"] * (6 - sent)
    resumed = keel_run(src, out, "--quiet", "--budget-usd", "1")
    assert resumed.exit_code == 0, resumed.output
    assert f"pre-flight: {6 - sent} requests" in resumed.output
    assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 6
    assert len(served_emulator.access_log.entries()) == 6  # nothing sent twice


def test_a_budget_cannot_be_kept_for_a_model_without_a_price(tmp_path: Path, served_emulator: Emulator) -> None:
    src = write_lines(tmp_path / "in.jsonl", [{"prompt": "hi", "model": "claude-unknown-1"}])
    result = keel_run(src, tmp_path / "out.jsonl", "--budget-usd", "1")
    assert result.exit_code == 2 and "no price for model 'claude-unknown-1'" in result.output
    assert served_emulator.access_log.entries() == [] and not (tmp_path / "home" / "runs.sqlite3").exists()


def test_the_api_key_is_never_in_the_output_the_ledger_or_the_results(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = canary_key("wrong")
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)  # the emulator answers 401, never retried
    src = write_lines(tmp_path / "in.jsonl", [*prompts(2), "{oops"])
    result = keel_run(src, tmp_path / "out.jsonl", "--quiet", "--budget-usd", "1")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in rows] == ["errored", "errored", "rejected"]
    assert rows[0]["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    written = [tmp_path / "out.jsonl", tmp_path / "out.rejects.jsonl", *(tmp_path / "home").glob("runs.sqlite3*")]
    for text in [result.output, *(path.read_bytes().decode(errors="replace") for path in written)]:
        assert secret not in text and "this-key-is-wrong" not in text


def test_with_a_database_url_the_run_ledger_is_postgresql_beside_the_batch_ledger(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from keel.batch import open_ledger

    src = write_lines(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    with schema_url() as url:
        monkeypatch.setenv("KEEL_DATABASE_URL", url)
        open_ledger().close()  # the batch ledger's tables in the same schema: the run ledger's do not meet them
        first = keel_run(src, out, "--quiet")
        assert first.exit_code == 0, first.output
        assert [row["status"] for row in read_jsonl(out)] == ["succeeded"] * 3
        again = keel_run(src, out, "--quiet", "--dry-run")  # the job is in PostgreSQL: nothing left to send
        assert again.exit_code == 0 and "pre-flight: 0 requests" in again.output
        with psycopg.connect(url) as conn:
            versions = dict(conn.execute("SELECT component, version FROM keel_schema").fetchall())
            assert versions == {"batch ledger": 3, "run ledger": 2}
            assert conn.execute("SELECT COUNT(*) FROM run_items WHERE state = 'succeeded'").fetchone() == (3,)
            conn.execute("UPDATE keel_schema SET version = 1 WHERE component = 'run ledger'")  # an older keel's
        older = keel_run(src, out, "--quiet")
        assert older.exit_code == 2 and "a run ledger of schema version 1, written by another keel" in older.output
    assert not (tmp_path / "home" / "runs.sqlite3").exists() and len(served_emulator.access_log.entries()) == 3

    monkeypatch.setenv("KEEL_DATABASE_URL", "postgresql://keel:s3cret@127.0.0.1:1/keel")
    unreachable = keel_run(src, out, "--quiet")
    assert unreachable.exit_code == 2 and "postgresql://keel:***@127.0.0.1:1/keel is unreachable" in unreachable.output
    assert "s3cret" not in unreachable.output and not (tmp_path / "home" / "runs.sqlite3").exists()


def test_a_reject_names_the_json_column_python_does(tmp_path: Path, served_emulator: Emulator) -> None:
    cut = '{"custom_id": "a", "prompt": "x"'  # cut short: Python says "line 1 column 33"
    src = write_lines(tmp_path / "in.jsonl", [cut, *prompts(1)])
    result = keel_run(src, tmp_path / "out.jsonl", "--quiet")
    assert result.exit_code == 0, result.output
    [reject] = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert reject["reason"] == "not valid JSON: Expecting ',' delimiter at column 33"
