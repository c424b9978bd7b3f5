"""Secrets: with a canary API key, everything keel writes or shows is searched for the key and distinctive pieces of it.

The tour, a batch and a bulk run (SQLite and PostgreSQL ledgers), failing calls (401, 500, connection errors; their
messages, reprs, tracebacks plain and with locals, and `keel --debug`'s), the proxy recording a cassette, and the
report. Searched: every file the test's folder holds afterwards (records, ledgers, outputs, cassettes, logs, keel's
home), every PostgreSQL row the jobs wrote, the CLI's output, and every log line at DEBUG (keel's, the SDK's,
httpx2's, uvicorn's).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anthropic
import psycopg
import pytest
from batch_helpers import invoke, prompts, write_lines
from keel_helpers import ask, canary_key, shell_for
from pg_helpers import schema_url
from proxy_helpers import MODEL, proxied

from keel import Client, KeelError
from keel.emulator import Emulator, EmulatorConfig
from keel.emulator.server import free_port

KEY = canary_key("secret")  # the key the emulator accepts
WRONG = canary_key("wrong")  # a key it refuses (401)
LOGGERS = ("", "keel", "anthropic", "httpx2", "httpcore", "uvicorn")


def pieces(key: str) -> list[str]:
    """The key, and pieces of it that would give it away: its distinctive middle, and its first and last 16
    characters (the API's own prefix, `sk-ant-api03-`, alone is not a secret)."""
    return [key, key.split("-")[3].rstrip("x"), key[:16], key[-16:]]


def assert_no_key(*texts: str, folder: Path | None = None) -> None:
    """No piece of either canary in the texts, nor in any file under `folder`."""
    found = [(label, text) for label, text in enumerate(texts)]
    if folder is not None:
        found += [(str(p), p.read_bytes().decode("latin-1")) for p in sorted(folder.rglob("*")) if p.is_file()]
    assert found, "nothing to search"
    for where, text in found:
        for piece in (*pieces(KEY), *pieces(WRONG)):
            assert piece not in text, f"{piece!r} found in {where}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, the libraries' included, with its traceback when it has one."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on loopback that accepts only KEY, and a user's shell pointing the `keel` command at it with KEY."""
    emulator = Emulator(EmulatorConfig(api_key=KEY, batch_speed=36_000, access_log=tmp_path / "access.jsonl"))
    with shell_for(emulator, monkeypatch, tmp_path / "home", KEY):
        yield emulator


def cli(*args: str) -> str:
    """The `keel` command in-process; its output (stdout and stderr) and any exception it raised, with traceback."""
    result = invoke(*args)
    shown = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        shown += "".join(traceback.format_exception(result.exception))
    return shown


def tracebacks(err: BaseException) -> str:
    """An error as a user may see it: message, repr, its cause's, its traceback, plain and with every frame's local
    variables (as a crash reporter shows them)."""
    with_locals = traceback.TracebackException.from_exception(err, capture_locals=True)
    plain = "".join(traceback.format_exception(err))
    return "\n".join([str(err), repr(err), repr(err.__cause__), plain, *with_locals.format()])


def test_the_tour_and_the_report_never_show_the_key(
    served: Emulator, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    records = tmp_path / "records.jsonl"
    shown = cli("tour", "--live", "--records", str(records))
    assert "step(s) misbehaved" not in shown, shown  # the tour ran against the emulator with the canary key
    assert records.exists() and len(served.access_log.entries()) > 5
    request_id = served.access_log.entries()[0].request_id
    report = cli("report", str(records)) + cli("report", str(records), "--json")
    found = cli("report", str(records), "--request-id", request_id) + cli(
        "explain", request_id, "--records", str(records)
    )
    assert request_id in found
    assert_no_key(shown, report, found, logs.text, folder=tmp_path)


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_batches_and_bulk_runs_write_the_key_in_no_ledger_output_or_log(
    served: Emulator, tmp_path: Path, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, ledger: str
) -> None:
    src = write_lines(tmp_path / "in.jsonl", [*prompts(4), {"custom_id": "bad", "prompt": "x", "max_tokens": -1}])
    with ExitStack() as stack:
        url = stack.enter_context(schema_url()) if ledger == "postgres" else None
        if url is not None:
            monkeypatch.setenv("KEEL_DATABASE_URL", url)
        common = ("--model", MODEL, "--max-tokens", "20")
        shown = cli("batch", "run", str(src), "--out", str(tmp_path / "batch.jsonl"), *common, "--poll-min", "0.01")
        assert "succeeded: 4" in shown, shown
        shown += cli("batch", "list") + cli("batch", "status", shown.split("job ", 1)[1].split(":", 1)[0])
        bulk = cli("run", str(src), "--out", str(tmp_path / "bulk.jsonl"), *common, "--quiet")
        assert "succeeded: 4" in bulk, bulk
        rows = dump_schema(url) if url is not None else ""
        assert ledger == "sqlite" or "succeeded" in rows  # the rows were read
    assert_no_key(shown, bulk, rows, logs.text, folder=tmp_path)


def dump_schema(url: str) -> str:
    """Every row of every table in the URL's schema, as text."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        assert tables
        return "\n".join(str(conn.execute(f'SELECT * FROM "{name}"'.encode()).fetchall()) for (name,) in tables)


def failed(keel: Client, *, stream: bool = False, **params: object) -> KeelError:
    """The error a call (or a stream) fails with."""
    with pytest.raises(KeelError) as caught:
        if stream:
            with keel.messages.stream(model=MODEL, max_tokens=20, messages=ask("hi"), **params) as s:
                s.until_done()
        else:
            keel.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"), **params)
    keel.close()
    return caught.value


@pytest.mark.usefixtures("quick_backoff")
def test_failing_calls_show_the_key_in_no_error_traceback_record_or_log(
    served: Emulator, tmp_path: Path, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, records = os.environ["ANTHROPIC_BASE_URL"], tmp_path / "records.jsonl"
    nowhere = f"http://127.0.0.1:{free_port()}"
    server_error = {"x-keel-fault": "status=500"}
    errors = [
        failed(Client(api_key=WRONG, base_url=base_url, records=records)),  # 401
        failed(Client(api_key=KEY, base_url=base_url, records=records, max_retries=0), extra_headers=server_error),
        failed(Client(api_key=KEY, base_url=nowhere, records=records, max_retries=0)),  # connection refused
        failed(Client(api_key=WRONG, base_url=base_url, records=records), stream=True),  # 401, streamed
    ]
    assert [getattr(err, "status", None) for err in errors] == [401, 500, None, 401]
    shown = [tracebacks(err) for err in errors]
    shown.append(cli("--debug", "call", "hi", "--model", MODEL, "--max-tokens", "5"))  # KEY: succeeds
    monkeypatch.setenv("ANTHROPIC_API_KEY", WRONG)
    shown += [cli("--debug", command, "hi", "--model", MODEL) for command in ("call", "stream")]
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", nowhere)
    shown += [cli("--debug", command, "hi", "--model", MODEL) for command in ("call", "stream")]
    assert (
        sum("invalid x-api-key" in text for text in shown) >= 4 and sum("cannot reach" in text for text in shown) == 2
    )
    assert_no_key(*shown, logs.text, folder=tmp_path)


def test_keel_debug_tracebacks_show_no_local_variables(tmp_path: Path) -> None:
    """An error no command expected, with --debug: the traceback, without the frames' variables (a command's own
    arguments, such as `keel emulator serve --api-key`)."""
    crash = (
        "import os, sys, keel.emulator.server as server\n"
        "def listen(*args, **kwargs): raise RuntimeError('boom')\n"
        "server.listen = listen\n"
        "from keel.cli import main\n"
        "sys.argv = ['keel', '--debug', 'emulator', 'serve', '--port', '0', '--api-key', os.environ['CANARY']]\n"
        "main()\n"
    )
    script = tmp_path / "crash.py"
    script.write_text(crash)
    env = {**os.environ, "COLUMNS": "200", "CANARY": KEY}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0 and "RuntimeError" in done.stderr and "boom" in done.stderr
    assert_no_key(done.stdout, done.stderr, folder=tmp_path)


def test_the_proxy_records_and_logs_without_the_key(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    cassette, access, echoed = tmp_path / "cassette.jsonl", tmp_path / "proxy.jsonl", []
    config = EmulatorConfig(api_key=KEY, access_log=tmp_path / "upstream.jsonl")
    with proxied(config, record=cassette, access_log=access, echo=echoed.append) as setup:
        with setup.sdk(api_key=KEY, max_retries=0) as sdk:
            sdk.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"))
            with sdk.messages.stream(model=MODEL, max_tokens=20, messages=ask("[[keel:words=5]]")) as stream:
                stream.get_final_message()
            with pytest.raises(anthropic.InternalServerError) as injected:
                sdk.messages.create(
                    model=MODEL, max_tokens=20, messages=ask("hi"), extra_headers={"x-keel-fault": "status=529"}
                )
        with setup.sdk(api_key=WRONG, max_retries=0) as sdk, pytest.raises(anthropic.AuthenticationError) as refused:
            sdk.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"))
        keel = Client(setup.sdk(api_key=KEY), records=tmp_path / "records.jsonl")
        keel.messages.create(model=MODEL, max_tokens=20, messages=ask("hi"))
        keel.close()
    assert len(cassette.read_text().splitlines()) >= 4 and len(echoed) == 5
    assert_no_key(*echoed, tracebacks(injected.value), tracebacks(refused.value), logs.text, folder=tmp_path)
