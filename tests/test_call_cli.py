"""`keel call` and `keel stream`: one request through the CLI, to the in-process emulator or a served one."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from keel.cli import app
from keel.emulator import Emulator

runner = CliRunner()
SUMMARY = re.compile(r"request_id req_\w+, stop_reason (\w+), (\d+) input / (\d+) output tokens, cost \$0\.\d{6}")


def test_call_prints_the_answer_then_request_id_stop_reason_usage_and_cost() -> None:
    result = runner.invoke(app, ["call", "--emulator", "say [[keel:reply=one two STOP three]]", "--stop", "STOP"])
    assert result.exit_code == 0, result.output
    text, summary = result.stdout.strip().splitlines()
    assert text == "one two "
    found = SUMMARY.fullmatch(summary)
    assert found is not None and found[1] == "stop_sequence" and int(found[3]) > 0


def test_stream_prints_the_text_as_it_comes_and_honours_system_and_max_tokens() -> None:
    args = ["stream", "--emulator", "tell [[keel:words=40]]", "--max-tokens", "5", "--system", "be brief"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text, summary = result.stdout.strip().splitlines()
    found = SUMMARY.fullmatch(summary)
    assert text and found is not None and found[1] == "max_tokens" and found[3] == "5"


def test_json_prints_the_raw_message_and_the_summary_on_stderr() -> None:
    for command in ("call", "stream"):
        result = runner.invoke(app, [command, "--emulator", "hi", "--json", "--model", "claude-haiku-5-5"])
        assert result.exit_code == 0, result.output
        message = json.loads(result.stdout)
        assert message["type"] == "message" and message["model"] == "claude-haiku-5-5"
        assert SUMMARY.fullmatch(result.stderr.strip()) is not None


def test_call_uses_the_environment_and_a_failure_is_one_line(served_emulator: Emulator) -> None:
    ok = runner.invoke(app, ["call", "hi"])
    assert ok.exit_code == 0 and SUMMARY.search(ok.stdout)
    assert len(served_emulator.access_log.entries()) == 1
    bad = runner.invoke(app, ["call", "hi", "--max-tokens", "1", "--model", "no-such-model"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("keel call: ") and len(bad.stderr.strip().splitlines()) == 1


def test_call_without_a_key_says_what_to_set(served_emulator: Emulator) -> None:
    result = runner.invoke(app, ["call", "hi"], env={"ANTHROPIC_API_KEY": None})
    assert result.exit_code == 2 and "no API credentials: set ANTHROPIC_API_KEY" in result.stderr
    assert not served_emulator.access_log.entries()
