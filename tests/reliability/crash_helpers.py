"""The crash suite's machinery: `keel` commands as real processes to SIGKILL, forked from a server that imported keel
once (so a kill point costs a fork, not an interpreter's start), and the emulator wrapped to count what each input
line was sent."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from keel.emulator import Emulator, EmulatorConfig

_FORKS = multiprocessing.get_context("forkserver")
# what a `keel` command imports as it runs, imported once in the server
_FORKS.set_forkserver_preload(
    ["keel.cli", "keel.batch.postgres", "keel.bulk.postgres", "httpcore2", "h11", "truststore"]
)
_QUESTION = re.compile(rb"Question (\d+) ")


def _keel_main(args: list[str], env: dict[str, str], log: str) -> None:
    """The `keel` command in a forked process: the environment a shell would give it, its output to `log`."""
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.argv = ["keel", *args]
    from keel.cli import main

    main()


class Keel:
    """One `keel` command running as a process of its own (`log` holds its output)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process: BaseProcess = _FORKS.Process(target=_keel_main, args=(args, env, str(log)), daemon=True)
        self.process.start()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.join(10)

    def finish(self, timeout: float = 60) -> str:
        """Wait for a clean exit; its output."""
        self.process.join(timeout)
        output = self.log.read_text() if self.log.exists() else ""
        assert self.process.exitcode == 0, f"exit {self.process.exitcode}:\n{output}"
        return output


def wait_until(condition: Callable[[], bool], what: str, *alive: Keel, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for each in alive:
            if not each.running():
                output = each.log.read_text() if each.log.exists() else ""
                pytest.fail(f"the runner exited ({each.process.exitcode}) before {what}:\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Counted:
    """The emulator's app, counting for each input line (its `Question N` prompt) the /v1/messages requests that
    reached the emulator: what was billed, per line, to set against the attempts the results report. Requests wait
    until `gate` is set: the runners of a job all join it before it starts."""

    def __init__(self, app: Emulator) -> None:
        self.app = app
        self.sent: Counter[str] = Counter()
        self.gate = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        body = b""

        async def reading() -> Any:
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            if scope.get("path") == "/v1/messages" and not message.get("more_body"):
                found = _QUESTION.search(body)
                if found:
                    self.sent[f"q{int(found.group(1))}"] += 1
            return message

        await self.app(scope, reading, send)


def batch_emulator() -> Emulator:
    """An emulator whose batches end in about half a second of real time, each create answered a tenth of a second
    after the batch is made (a window where the batch exists but its runner has not heard), each download slow too."""
    emulator = Emulator(EmulatorConfig(batch_speed=120))
    emulator.inject("latency_ms=100", path="/v1/messages/batche[s]")
    emulator.inject("latency_ms=100", path="/v1/messages/batches/*/results")
    return emulator
