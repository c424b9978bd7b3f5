"""keel.Client vs the raw SDK per standard call, over loopback, with the emulator in a process of its own.

Run: .venv/bin/python bench/client_loopback.py
The in-process bench (bench/client_bench.py) shares one interpreter, and so one GIL, between client and
emulator; here the emulator (`keel emulator serve`) runs on the other core, as a real server would.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
from alternating import alternate

from keel import Client
from keel.emulator import DEFAULT_API_KEY
from keel.emulator.server import free_port

PARAMS = {"model": "claude-haiku-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


def wait_until_up(sdk: anthropic.Anthropic) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            sdk.models.retrieve("claude-haiku-5-5")
            return
        except anthropic.APIConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(blocks: int = 40, calls: int = 50) -> None:
    port = free_port()
    serve = [sys.executable, "-c", "from keel.cli import main; main()", "emulator", "serve", "--port", str(port)]
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sdk = anthropic.Anthropic(api_key=DEFAULT_API_KEY, base_url=f"http://127.0.0.1:{port}")
        wait_until_up(sdk)
        with tempfile.TemporaryDirectory() as tmp:
            keel = Client(sdk, records=Path(tmp) / "records.jsonl")
            sides: dict[str, Callable[[], object]] = {
                "raw SDK": lambda: sdk.messages.create(**PARAMS),
                "keel + JSONL": lambda: keel.messages.create(**PARAMS),
            }
            timings = alternate(sides, blocks, calls)
            keel.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    raw = statistics.median(timings["raw SDK"])
    kept = statistics.median(timings["keel + JSONL"])
    print(f"loopback, emulator in its own process: medians of {blocks} alternating blocks of {calls} calls")
    print(f"raw SDK {raw:8.1f} µs/call   keel + JSONL {kept:8.1f} µs/call   {kept / raw:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()
