"""What only the PostgreSQL ledger does: an unreachable server at start, and a server restarting mid-run (a
private server on a spare port, stopped while a job runs: nothing proceeds unrecorded, nothing is lost or
submitted twice, and the message says what happened without the password)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest
from batch_helpers import emulator, prompts, read_jsonl, runner, write_lines
from pg_helpers import PrivatePostgres, wait_for
from typer.testing import CliRunner

from keel import StoreUnavailable
from keel.batch.postgres import PostgresLedger
from keel.cli import app

UNREACHABLE_URL = "postgresql://keel:s3cret@127.0.0.1:1/keel"


def test_unreachable_postgres_at_start_is_a_clear_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        PostgresLedger(UNREACHABLE_URL)
    message = "".join(traceback.format_exception(caught.value))
    assert "batch ledger at postgresql://keel:***@127.0.0.1:1/keel is unreachable" in message
    assert "s3cret" not in message

    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEEL_DATABASE_URL", UNREACHABLE_URL)
    result = CliRunner().invoke(app, ["batch", "list"])
    assert result.exit_code == 2 and "postgresql://keel:***@127.0.0.1:1/keel is unreachable" in result.output
    assert "s3cret" not in result.output and not (tmp_path / "home").exists()  # no silent fallback to SQLite


def test_a_postgres_restart_mid_run_loses_nothing_and_submits_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        ledger = PostgresLedger(server.url, reconnect_for=60)
        src = write_lines(tmp_path / "in.jsonl", prompts(12))
        emu = emulator()
        run = runner(emu, ledger, shard_requests=3)  # four shards, submitted one after the other
        # each create takes 0.3 s, so the outage below starts well before the last shard could be submitted
        emu.inject("latency_ms=300", path="/v1/messages/batche[s]")
        created: list[int] = []

        def outage() -> None:  # the server goes away once the first batch is created, for a second and a half
            wait_for(lambda: len(emu.batches) >= 1)
            server.stop()
            created.append(len(emu.batches))
            time.sleep(1.5)
            created.append(len(emu.batches))
            server.start()

        thread = threading.Thread(target=outage)
        thread.start()
        with caplog.at_level(logging.WARNING):
            run.run(src, tmp_path / "out.jsonl")
        thread.join()
        assert "s3cret" not in repr(ledger) + repr(ledger._pg.net) + ledger.where
        ledger.close()
    finally:
        server.remove()
    # at most the create already in flight when the server went away ends during the outage; nothing new starts
    assert created[1] - created[0] <= 1 and created[1] < 4
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [row["status"] for row in out] == ["succeeded"] * 12
    assert Counter(row["custom_id"] for row in out) == Counter(f"q{n}" for n in range(12))
    assert len(emu.batches) == 4 and {row["attempts"] for row in out} == {1}  # one batch per shard, sent once
    assert f"batch ledger at postgresql://keel:***@127.0.0.1:{server.port}/postgres unreachable" in caplog.text
    assert "answers again" in caplog.text and "s3cret" not in caplog.text
