"""What keel's OpenTelemetry costs per call: keel with telemetry off, on without any provider configured (the
default in a process that never set up OpenTelemetry), and on with the OpenTelemetry SDK's providers (the SDK's
spans and keel's metrics recorded, nothing exported), next to the bare SDK, over the canned transport of
bench/client_overhead.py (no emulator: only the client's own CPU).

Run: .venv/bin/python bench/telemetry_overhead.py (`--help` for the knobs)
Prints µs per call, medians of alternating blocks. `--instructions` counts instructions instead (valgrind's
callgrind, one process per side and count: the difference between a run of `--calls-high` and one of
`--calls-low` calls, per call), which the load of a shared machine does not move.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import alternating
import anthropic
import httpx2
from client_overhead import PARAMS, canned
from targets import add_arguments, finish, info

from keel import Client, Telemetry

SIDES = (
    "raw SDK",
    "raw SDK, OTel SDK spans",
    "keel, telemetry off",
    "keel, telemetry on, no provider",
    "keel, telemetry on, OTel SDK",
)


def make_call(side: str) -> Callable[[], object]:
    """One call of `side`, on a client of its own."""
    http = httpx2.Client(transport=httpx2.MockTransport(canned), base_url="http://canned")
    options: dict[str, Any] = {}
    telemetry: bool | Telemetry = side != "keel, telemetry off"
    if "OTel SDK" in side:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        options["open_telemetry"] = {"tracer_provider": TracerProvider()}  # spans recorded, none exported
        telemetry = Telemetry(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    sdk = anthropic.Anthropic(api_key="canned", base_url="http://canned", http_client=http, **options)
    if side.startswith("raw SDK"):
        return lambda: sdk.messages.create(**PARAMS)
    client = Client(sdk, telemetry=telemetry)
    return lambda: client.messages.create(**PARAMS)


def instructions(side: str, calls: int, warmup: int) -> int:
    """Instructions callgrind counts for a process that makes `calls` calls of `side` after `warmup`."""
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(tmp) / 'out'}",
                sys.executable,
                __file__,
                "--run-side",
                side,
                "--calls",
                str(calls),
                "--warmup",
                str(warmup),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    assert found is not None, run.stderr[-2000:]
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keel's OpenTelemetry cost per call over a canned transport.")
    alternating.add_arguments(parser, blocks=40, calls=100)
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind instead")
    parser.add_argument("--calls-low", type=int, default=50, help="--instructions: calls of the shorter run")
    parser.add_argument("--calls-high", type=int, default=250, help="--instructions: calls of the longer run")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=SIDES, help="the sides to measure (default all)")
    parser.add_argument("--run-side", help=argparse.SUPPRESS)  # one side's calls, in a process of its own
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.run_side is not None:
        call = make_call(args.run_side)
        for _ in range(args.warmup + args.calls):
            call()
        return 0
    if args.instructions:
        per_call = {
            side: (instructions(side, args.calls_high, args.warmup) - instructions(side, args.calls_low, args.warmup))
            / (args.calls_high - args.calls_low)
            for side in args.sides
        }
        base = per_call[args.sides[0]]  # the first side measured
        runs = f"{args.calls_high} - {args.calls_low} calls after {args.warmup}"
        print(f"instructions per call (callgrind, {runs}), against the first side")
        for side, count in per_call.items():
            print(f"{side:34s} {count / 1000:9.1f} k   {(count - base) / 1000:+8.1f} k   {count / base:.3f}x")
        return finish(args, [])
    timings = alternating.alternate({side: make_call(side) for side in SIDES}, args.blocks, args.calls, args.warmup)
    base = statistics.median(timings["raw SDK"])
    print(f"keel telemetry per-call CPU over a canned transport: medians of {args.blocks} blocks of {args.calls} calls")
    for side, values in timings.items():
        median = statistics.median(values)
        print(f"{side:34s} {median:8.1f} µs/call   {median - base:+7.1f} µs   {median / base:.3f}x")
    off = statistics.median(timings["keel, telemetry off"])
    added = [
        info(f"{side}, added over telemetry off", statistics.median(timings[side]) - off, "µs", 1) for side in SIDES[3:]
    ]
    return finish(args, added)


if __name__ == "__main__":
    sys.exit(main())
