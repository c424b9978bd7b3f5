"""The CLI's errors are one or two plain lines (the traceback only with --debug), an unreachable API is reported at
the start within seconds, and Ctrl-C says what was kept and how to resume, leaving no job marked running."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from batch_helpers import MODEL, invoke, prompts, write_lines

from keel.batch import BatchRunner
from keel.bulk.ledger import RunLedger
from keel.bulk.runner import BulkProgress
from keel.cli import main
from keel.emulator import Emulator
from keel.emulator.server import free_port


def keel_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`keel ARGS` as the installed command runs it (errors included); its exit status."""
    monkeypatch.setattr("sys.argv", ["keel", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def test_an_unreachable_api_is_two_lines_within_seconds(tmp_path: Path, served_emulator: Emulator) -> None:
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{free_port()}")
        started = time.monotonic()
        result = invoke("batch", "run", str(src), "--out", str(tmp_path / "out.jsonl"), "--model", MODEL)
    assert time.monotonic() - started < 10
    assert result.exit_code == 2
    assert "cannot reach the API at http://127.0.0.1:" in result.stderr and "ANTHROPIC_BASE_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2 and "Traceback" not in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_an_unexpected_error_is_one_line_and_a_hint_and_debug_shows_it(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*_: object) -> str:
        raise RuntimeError("the disk fell off")

    monkeypatch.setattr(BatchRunner, "run", boom)
    src = write_lines(tmp_path / "in.jsonl", prompts(1))
    args = ("batch", "run", str(src), "--out", str(tmp_path / "out.jsonl"), "--model", MODEL, "--quiet")
    assert keel_main(monkeypatch, *args) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "keel: unexpected RuntimeError: the disk fell off",
        "Run it again with --debug for the traceback.",
    ]
    with pytest.raises(RuntimeError, match="the disk fell off"):
        keel_main(monkeypatch, "--debug", *args)


def test_ctrl_c_in_batch_run_says_how_to_resume_and_the_job_is_stopped(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(BatchRunner, "drive", interrupt)
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    result = invoke("batch", "run", str(src), "--out", str(out), "--model", MODEL, "--quiet")
    assert result.exit_code == 130
    assert "keel batch run: interrupted. What finished is kept in the ledger" in result.stderr
    assert f"To resume: keel batch run {src} --out {out} --model {MODEL}" in result.stderr
    assert "Traceback" not in result.output
    listed = invoke("batch", "list")
    assert "stopped" in listed.output and "running" not in listed.output


def test_ctrl_c_in_keel_run_says_how_to_resume_and_the_job_is_stopped(
    tmp_path: Path, served_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(BulkProgress, "add", interrupt)
    src = write_lines(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    result = invoke("run", str(src), "--out", str(out), "--model", MODEL, "--max-tokens", "50", "--quiet")
    assert result.exit_code == 130, result.output
    assert "keel run: interrupted. Every answer received is kept in the ledger" in result.stderr
    assert f"To resume: keel run {src} --out {out} --model {MODEL} --max-tokens 50" in result.stderr
    assert [job.status for job in RunLedger(tmp_path / "home" / "runs.sqlite3").jobs()] == ["stopped"]


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("keel 0.")
