"""The `keel` command: the tour, and `keel emulator serve` as a real process."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
from rich.console import Console
from typer.testing import CliRunner

from keel._report import summarize
from keel._tour import run_tour
from keel.cli import app
from keel.emulator.server import free_port

KEEL = [sys.executable, "-c", "from keel.cli import main; main()"]


def test_tour_passes_every_step_offline(tmp_path: Path) -> None:
    out = io.StringIO()
    records = tmp_path / ".keel" / "records.jsonl"
    assert run_tour(records, console=Console(file=out, width=120)) == 0
    text = out.getvalue()
    page = records.with_name("report.html")
    assert text.rstrip().endswith(f"  keel report {records}\n  keel report {records} --html {page}")
    assert summarize(records).calls >= 5
    # the command it prints writes the page
    html_command = text.rstrip().splitlines()[-1].split()
    assert CliRunner().invoke(app, html_command[1:]).exit_code == 0
    assert "<svg" in page.read_text()
    assert "keel's embedded emulator" in text
    assert "Every step behaved as expected." in text
    assert "authentication_error" in text and "invalid_request_error" in text
    assert "not retryable: fix_credentials" in text and "not retryable: fix_request" in text
    assert text.count("call record:") == 4 and "attempt records" in text  # steps 1, 2a, 2b and 3
    assert "MaxTokens" in text and "StopSequence" in text and "category 'cyber'" in text
    assert re.search(r"10,000 nightly summaries\s*│\s*batch", text)
    assert "polled: succeeded 5" in text and re.search(r"batch \$0\.\d+,\s+standard\s+\$0\.\d+,\s+saved", text)
    assert re.search(r"\b529\b.*\n.*\b529\b.*\n.*\b200\b", text)  # the three attempts, in order
    assert len(set(re.findall(r"req_011C\w{20}", text))) >= 5


def test_tour_live_without_a_key_says_so(monkeypatch: object) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    result = subprocess.run([*KEEL, "tour", "--live"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY" in result.stdout


def test_emulator_serve_answers_the_sdk_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    scenario = tmp_path / "faults.toml"
    scenario.write_text('[[rules]]\npath = "/v1/messages/count_tokens"\nstatus = 503\n')
    port = free_port()
    proc = subprocess.Popen(
        [*KEEL, "emulator", "serve", "--port", str(port), "--api-key", "test-key", "--faults", str(scenario)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner
        # no retries: the banner comes once the port is bound
        sdk = anthropic.Anthropic(api_key="test-key", base_url=f"http://127.0.0.1:{port}", max_retries=0)
        message = sdk.messages.create(
            model="claude-haiku-5-5", max_tokens=50, messages=[{"role": "user", "content": "[[keel:reply=served]]"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == "served"
        try:
            sdk.with_options(max_retries=0).messages.count_tokens(model="claude-haiku-5-5", messages=[])
        except anthropic.InternalServerError as err:
            assert err.status_code == 503
        else:
            raise AssertionError("the scenario's 503 rule did not apply")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_emulator_serve_on_a_busy_port_is_one_line_and_no_banner() -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["emulator", "serve", "--port", str(port)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"keel emulator serve: cannot listen on 127.0.0.1:{port}: Address already in use. Pick another --port, or "
        "stop what uses it."
    ]


def test_emulator_serve_rejects_a_bad_scenario_with_its_line(tmp_path: Path) -> None:
    scenario = tmp_path / "faults.toml"
    scenario.write_text("seed = 1\n[[rules]]\nstatus = 529\nprobability = 'often'\n")
    result = subprocess.run(
        [*KEEL, "emulator", "serve", "--faults", str(scenario)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{scenario}:4: rule 1: probability" in result.stderr


def test_emulator_serve_enforces_scenario_limits_and_writes_the_access_log(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[limits]\nrpm = 100\n\n[[limits.keys]]\nkey = "sk-ant-small-tenant"\nrpm = 1\n')
    access_log = tmp_path / "logs" / "access.jsonl"
    access_log.parent.mkdir()
    port = free_port()
    serve = ["emulator", "serve", "--port", str(port), "--faults", str(scenario), "--access-log", str(access_log)]
    proc = subprocess.Popen(
        [*KEEL, *serve, "--clock-speed", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        sdk = anthropic.Anthropic(api_key="sk-ant-small-tenant", base_url=f"http://127.0.0.1:{port}", max_retries=0)
        hello: list[Any] = [{"role": "user", "content": "Hello"}]
        raw = sdk.messages.with_raw_response.create(model="claude-haiku-5-5", max_tokens=20, messages=hello)
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
        try:
            sdk.messages.create(model="claude-haiku-5-5", max_tokens=20, messages=hello)
        except anthropic.RateLimitError as err:
            # 1 RPM on a clock 6 times as fast: a request every 10 s, retry-after in real seconds
            assert 1 <= int(err.response.headers["retry-after"]) <= 10
        else:
            raise AssertionError("the key's limit of 1 RPM did not apply")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = access_log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["status"] for line in lines] == [200, 429] and lines[0]["request_id"] == raw.headers["request-id"]
    assert lines[0]["key_id"] == lines[1]["key_id"] and "sk-ant-small-tenant" not in text


def test_emulator_serve_rejects_bad_limits_naming_the_field(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[[limits.keys]]\nkey = "a"\nitpm = 0\n')
    result = subprocess.run(
        [*KEEL, "emulator", "serve", "--faults", str(scenario)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{scenario}:3: [[limits.keys]] #1: itpm: expected a whole number >= 1, got 0" in result.stderr


# What `keel --help` and `keel --version` may not import: the SDK, the emulator and its web stack.
_HEAVY = ("anthropic", "keel.emulator", "starlette", "uvicorn", "keel.batch", "keel.bulk", "keel.proxy")
_MODULES_AFTER = """
import json, sys
sys.argv = ["keel", *json.loads(sys.argv[1])]
from keel.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(*arguments: str) -> tuple[set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    *shown, modules = done.stdout.strip().splitlines()
    return set(json.loads(modules)), "\n".join(shown)


def test_keel_help_lists_every_command_without_importing_the_sdk_or_the_emulator() -> None:
    modules, shown = _modules_after("--help")
    for name in ("run", "proxy", "call", "stream", "tour", "config", "explain", "report", "cards", "emulator", "batch"):
        assert re.search(rf"│ {name} ", shown), name
    assert "Durable, resumable Message Batches." in shown
    assert not {name for name in modules if name.startswith(_HEAVY)}


def test_keel_version_imports_neither_the_sdk_nor_the_emulator() -> None:
    modules, shown = _modules_after("--version")
    assert shown.startswith("keel ")
    assert not {name for name in modules if name.startswith(_HEAVY)}


def test_a_lazy_command_loads_when_run_and_lists_its_own_help() -> None:
    from keel.cli import _LAZY, load_command

    for name, lazy in _LAZY.items():
        assert load_command(name).help == lazy.help, name
    modules, shown = _modules_after("batch", "--help")
    assert "keel.batch.cli" in modules and "status" in shown and "adopt" in shown


def test_a_mistyped_command_suggests_a_lazy_one_too() -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    result = CliRunner().invoke(app, ["bach"])
    assert result.exit_code == 2 and "Did you mean 'batch'?" in result.output
