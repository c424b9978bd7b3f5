"""keel.Client's own CPU per standard call, without an emulator thread: the SDK over a canned transport.

Run: .venv/bin/python bench/client_overhead.py (`--help` for the knobs)
Prints µs per call for the bare SDK, keel without records and keel with a JSONL records file, as medians of
alternating blocks, and the added µs. Complements bench/client_bench.py (end to end on the emulator).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import alternating
import anthropic
import httpx2
from targets import add_arguments, finish, info

from keel import Client

MESSAGE = {
    "model": "claude-haiku-5-5",
    "id": "msg_01canned",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "hello there"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "stop_details": None,
    "usage": {"input_tokens": 7, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
}
BODY = json.dumps(MESSAGE).encode()
HEADERS = {"request-id": "req_011Ccannedcannedcanned00", "content-type": "application/json"}
PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hi"}],
}


def canned(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=BODY, headers=HEADERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keel.Client's own CPU per call over a canned transport.")
    alternating.add_arguments(parser, blocks=40, calls=100)
    add_arguments(parser)
    args = parser.parse_args(argv)
    http = httpx2.Client(transport=httpx2.MockTransport(canned), base_url="http://canned")
    sdk = anthropic.Anthropic(api_key="canned", base_url="http://canned", http_client=http)
    with tempfile.TemporaryDirectory() as tmp:
        plain, recorded = Client(sdk), Client(sdk, records=Path(tmp) / "r.jsonl")
        sides: dict[str, Callable[[], object]] = {
            "raw SDK": lambda: sdk.messages.create(**PARAMS),
            "keel": lambda: plain.messages.create(**PARAMS),
            "keel + JSONL": lambda: recorded.messages.create(**PARAMS),
        }
        timings = alternating.alternate(sides, args.blocks, args.calls, args.warmup)
    base = statistics.median(timings["raw SDK"])
    print(f"keel per-call CPU over a canned transport: medians of {args.blocks} blocks of {args.calls} calls")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:14s} {median:8.1f} µs/call   {median - base:+7.1f} µs   {median / base:.3f}x")
    added = [
        info(f"{name}, added per call (canned transport)", statistics.median(values) - base, "µs", 1)
        for name, values in timings.items()
        if name != "raw SDK"
    ]
    return finish(args, added)


if __name__ == "__main__":
    sys.exit(main())
