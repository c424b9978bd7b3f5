"""`keel emulator serve` in a process of its own, on a free loopback port: the server side of the loopback benchmarks.

    with EmulatorProcess("--batch-speed", "100000", log=work / "emulator.log") as emulator:
        sdk = anthropic.Anthropic(api_key=DEFAULT_API_KEY, base_url=emulator.base_url)

The options are those of `keel emulator serve` (`--port` is chosen here). The constructor returns once the
emulator answers an HTTP request, so its start-up is never part of a measurement; `close()` (or leaving the
`with` block) stops it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from keel.emulator import DEFAULT_API_KEY
from keel.emulator.server import free_port

# `python -c` rather than the `keel` script: this interpreter's keel, whatever is on PATH
SERVE = [sys.executable, "-c", "from keel.cli import main; main()", "emulator", "serve"]


class EmulatorProcess:
    """`keel emulator serve <options>` on a free port of 127.0.0.1; its output goes to `log` (else nowhere)."""

    def __init__(self, *options: str, log: Path | None = None, timeout: float = 30.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb") if log is not None else None
        output = self._log if self._log is not None else subprocess.DEVNULL
        command = [*SERVE, "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        request = urllib.request.Request(
            f"{self.base_url}/v1/models/claude-haiku-5-5",
            headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the emulator exited with status {self.process.returncode}")
            try:
                with urllib.request.urlopen(request, timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise SystemExit(f"the emulator did not answer within {timeout:g} s")

    def cpu_seconds(self) -> float:
        """The CPU time the emulator has used so far (user and system; Linux only, else NaN)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
