"""Helpers for the batch runner tests: input files and a runner over the in-process emulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from keel import Client
from keel.batch import BatchRunner, Ledger, RunnerOptions, SQLLedger
from keel.batch.inputs import Defaults
from keel.emulator import Emulator, EmulatorConfig, client

MODEL = "claude-haiku-5-5"

Ledgers = Callable[..., SQLLedger]
"""The `ledgers` fixture (conftest.py): opens the test's ledger of the kind under test, or another one by name."""


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def prompts(count: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{n}", "prompt": f"Question {n} [[keel:words=6]]"} for n in range(count)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def emulator(**config: Any) -> Emulator:
    return Emulator(EmulatorConfig(batch_speed=0, **config))


def runner(emu: Emulator, ledger: Ledger, **options: Any) -> BatchRunner:
    """A runner whose waits move the emulator's batch clock an hour instead of sleeping."""
    defaults = options.pop("defaults", Defaults(model=MODEL, max_tokens=100))
    opts = RunnerOptions(defaults=defaults, poll_min=0.0, poll_max=0.0, **options)
    keel = Client(client(emu, _strict_response_validation=True), policy="background")
    return BatchRunner(keel, ledger, opts, sleep=lambda _: emu.batches.advance(3600))


def invoke(*args: str, clock: Emulator | None = None) -> Result:
    """The `keel` command, in-process; with `clock`, the emulator's batch clock moves an hour every few milliseconds
    meanwhile."""
    from keel.cli import app

    stop = threading.Event()

    def tick() -> None:
        while clock is not None and not stop.wait(0.005):
            clock.batches.advance(3600)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        stop.set()
        ticker.join()
