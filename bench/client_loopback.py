"""keel.Client vs the raw SDK per standard call, over loopback, with the emulator in a process of its own.

Run: .venv/bin/python bench/client_loopback.py (`--help` for the knobs, `--strict` to exit 1 on FAIL)
The in-process bench (bench/client_bench.py) shares one interpreter, and so one GIL, between client and
emulator; here the emulator (`keel emulator serve`) runs on the other core, as a real server would.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import alternating
import anthropic
from emulator_process import EmulatorProcess
from targets import add_arguments, at_most, finish, print_verdicts

from keel import Client
from keel.emulator import DEFAULT_API_KEY

TARGET = 1.05  # keel + JSONL over raw SDK, at most
PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hi"}],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keel.Client vs the raw SDK, emulator in its own process.")
    alternating.add_arguments(parser, blocks=40, calls=50)
    add_arguments(parser)
    args = parser.parse_args(argv)
    with EmulatorProcess() as emulator, tempfile.TemporaryDirectory() as tmp:
        sdk = anthropic.Anthropic(api_key=DEFAULT_API_KEY, base_url=emulator.base_url)
        keel = Client(sdk, records=Path(tmp) / "records.jsonl")
        sides: dict[str, Callable[[], object]] = {
            "raw SDK": lambda: sdk.messages.create(**PARAMS),
            "keel + JSONL": lambda: keel.messages.create(**PARAMS),
        }
        timings = alternating.alternate(sides, args.blocks, args.calls, args.warmup)
        keel.close()
    raw = statistics.median(timings["raw SDK"])
    kept = statistics.median(timings["keel + JSONL"])
    print(f"loopback, emulator in its own process: medians of {args.blocks} alternating blocks of {args.calls} calls")
    print(f"raw SDK {raw:8.1f} µs/call   keel + JSONL {kept:8.1f} µs/call")
    results = [at_most("keel + JSONL/raw SDK, loopback", kept / raw, TARGET)]
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
