"""keel.AsyncClient against the raw AsyncAnthropic, 64 calls at a time, the emulator in a process of its own.

Both sides share one `anthropic.AsyncAnthropic` (and so one connection pool) on the loopback emulator
(`keel emulator serve`, limits reported, not enforced); keel wraps it as `keel.AsyncClient(sdk,
records=<tmp>/records.jsonl)` (no limiter). A block is `calls` standard calls started at once through an
`asyncio.Semaphore(64)`; the sides alternate block by block (ABBA) after a warm-up. The figure per side is its
median block in calls/s; the ratio is the median over the block pairs of keel's time over raw's.
Target: keel/raw at most 1.05x with 64 in flight. The same with one call at a time is printed for comparison
(`--sequential-blocks 0` skips it).

Each side's client CPU per call, the garbage collector's share of it (timed through `gc.callbacks`) and the
emulator's CPU per call (from /proc) are printed too: with 64 calls in flight the collector's share grows many
times over, which is what makes keel's ratio larger there than one call at a time (see docs/benchmarks.md).
`--gc-freeze` calls `gc.freeze()` after the warm-up, so that full collections no longer walk the start-up heap.
`--controls` adds two more sides to the alternation, each compared with raw the same way: "raw again" (the same raw
calls under another name: what the harness reads when nothing differs, i.e. its own noise) and "middleware" (the
raw SDK with a middleware that only passes each request on: what the SDK's middleware hook costs, which keel's
attempt middleware rides on).
`--profile` runs keel's side once more under cProfile instead (`--profile-out FILE` keeps the stats).

Run: `.venv/bin/python bench/client_concurrency.py` (`--help` for the knobs, `--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import alternating
import anthropic
from anthropic._middleware import AsyncCallNext, Middleware
from anthropic._request import APIRequest
from anthropic._response import AsyncAPIResponse
from emulator_process import EmulatorProcess
from load import Drive, drive
from targets import Result, add_arguments, at_most, finish, info, print_verdicts

import keel
from keel.emulator import DEFAULT_API_KEY

TARGET = 1.05  # keel's time over raw's with `--concurrency` calls in flight, at most
PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hi"}],
}


Timings = dict[str, list[Drive]]  # per side, one Drive per block


def pair_ratios(timings: Timings, side: str = "keel") -> list[float]:
    """`side`'s time over raw's, block pair by block pair."""
    return [k.seconds / r.seconds for r, k in zip(timings["raw"], timings[side], strict=True)]


class PassThrough(Middleware):
    """A middleware that does nothing but pass the request on."""

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        return await call_next(request)


async def measure(emulator: EmulatorProcess, records: Path, args: argparse.Namespace) -> dict[int, Timings]:
    """Per concurrency (`--concurrency`, then 1), each side's blocks; each block's `probed` is the emulator's CPU."""
    async with anthropic.AsyncAnthropic(api_key=DEFAULT_API_KEY, base_url=emulator.base_url) as sdk:
        client = keel.AsyncClient(sdk, records=records)
        sides: dict[str, Callable[[], Awaitable[object]]] = {
            "raw": lambda: sdk.messages.create(**PARAMS),
            "keel": lambda: client.messages.create(**PARAMS),
        }
        if args.controls:
            through = sdk.with_options(middleware=[PassThrough()])
            sides["raw again"] = lambda: sdk.messages.create(**PARAMS)
            sides["middleware"] = lambda: through.messages.create(**PARAMS)
        probe = emulator.cpu_seconds
        found = {
            args.concurrency: await alternating.alternate_async(
                sides,
                args.blocks,
                args.calls,
                args.concurrency,
                args.warmup,
                probe,
                gc.freeze if args.gc_freeze else None,
            )
        }
        if args.sequential_blocks:
            found[1] = await alternating.alternate_async(
                sides, args.sequential_blocks, args.sequential_calls, 1, args.warmup // 10, probe
            )
        await client.close()
    return found


# per side, the median over its blocks of: (heading, width, format, figure of one block)
COLUMNS: tuple[tuple[str, int, str, Callable[[Drive], float]], ...] = (
    ("calls/s", 9, ",.0f", lambda d: d.per_second),
    ("client µs/call", 16, ",.0f", lambda d: d.cpu_seconds / d.calls * 1e6),
    ("busy", 6, ".0%", lambda d: d.cpu_seconds / d.seconds),
    ("GC µs/call", 12, ",.0f", lambda d: d.gc_seconds / d.calls * 1e6),
    ("full GCs", 10, ".1f", lambda d: d.gc_full / d.calls * 1000),
    ("emulator µs/call", 18, ",.0f", lambda d: d.probed / d.calls * 1e6),
    ("busy", 6, ".0%", lambda d: d.probed / d.seconds),
)


def report(concurrency: int, timings: Timings) -> float:
    """Print one concurrency's figures; the median pair ratio."""
    blocks = timings["raw"]
    print(f"{concurrency} in flight: {len(blocks)} blocks of {blocks[0].calls:,} calls per side, alternating (ABBA)")
    print(f"{'side':<11}" + "".join(f"{heading:>{width}}" for heading, width, _, _ in COLUMNS))
    for side, drives in timings.items():
        figures = (f"{statistics.median(map(figure, drives)):>{width}{spec}}" for _, width, spec, figure in COLUMNS)
        print(f"{side:<11}" + "".join(figures))
    for side in list(timings)[1:]:
        pairs = pair_ratios(timings, side)
        shown = " ".join(f"{r:.3f}" for r in pairs)
        print(f"{side}/raw time: median of the pairs {statistics.median(pairs):.3f}; pairs {shown}")
    print(f"keel/raw client CPU per call: median of the pairs {cpu_ratio(timings):.3f}\n")
    return statistics.median(pair_ratios(timings))


def cpu_ratio(timings: Timings) -> float:
    """keel's client CPU per call over raw's, the median over the block pairs: what the time ratio tends to when the
    client's core is the bottleneck, and less shaken by other processes than the time itself."""
    pairs = zip(timings["raw"], timings["keel"], strict=True)
    return statistics.median((k.cpu_seconds / k.calls) / (r.cpu_seconds / r.calls) for r, k in pairs)


async def profile_keel(base_url: str, records: Path, args: argparse.Namespace) -> None:
    """keel's side alone, warmed up, then `blocks` blocks under cProfile; the top functions by own time."""
    async with anthropic.AsyncAnthropic(api_key=DEFAULT_API_KEY, base_url=base_url) as sdk:
        client = keel.AsyncClient(sdk, records=records)
        await drive(lambda _: client.messages.create(**PARAMS), args.warmup, args.concurrency)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.blocks):
            await drive(lambda _: client.messages.create(**PARAMS), args.calls, args.concurrency)
        profiler.disable()
        await client.close()
    if args.profile_out is not None:
        profiler.dump_stats(args.profile_out)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(40)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keel.AsyncClient vs the raw AsyncAnthropic, 64 calls at a time.")
    alternating.add_arguments(parser, blocks=20, calls=640, warmup=640)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument("--sequential-blocks", type=int, default=10, help="blocks one call at a time (default 10)")
    parser.add_argument("--sequential-calls", type=int, default=100, help="calls per such block (default 100)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after the warm-up: full collections skip the start-up heap",
    )
    parser.add_argument(
        "--controls",
        action="store_true",
        help='two more sides: "raw again" (the harness\'s noise) and "middleware" (a pass-through SDK middleware)',
    )
    parser.add_argument("--profile", action="store_true", help="cProfile keel's side instead of measuring")
    parser.add_argument("--profile-out", type=Path, help="with --profile: also write the stats to this file")
    add_arguments(parser)
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    with EmulatorProcess() as emulator, tempfile.TemporaryDirectory(prefix="keel-concurrency-") as tmp:
        records = Path(tmp) / "records.jsonl"
        if args.profile:
            asyncio.run(profile_keel(emulator.base_url, records, args))
            return 0
        found = asyncio.run(measure(emulator, records, args))
    print(
        f"keel.AsyncClient + JSONL against the raw AsyncAnthropic, emulator in its own process (load average "
        f"{load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end)\n"
    )
    results: list[Result] = []
    for concurrency, timings in found.items():
        ratio = report(concurrency, timings)
        if concurrency == args.concurrency:
            results.append(at_most(f"keel/raw time, {concurrency} in flight", ratio, TARGET))
            results.append(info(f"keel/raw client CPU per call, {concurrency} in flight", cpu_ratio(timings)))
            gc_added = statistics.median(d.gc_seconds / d.calls * 1e6 for d in timings["keel"]) - statistics.median(
                d.gc_seconds / d.calls * 1e6 for d in timings["raw"]
            )
            results.append(info(f"GC time keel adds per call, {concurrency} in flight", gc_added, "µs", 0))
            for side in ("raw again", "middleware"):
                if side in timings:
                    median = statistics.median(pair_ratios(timings, side))
                    results.append(info(f"{side}/raw time, {concurrency} in flight", median))
        else:
            results.append(info("keel/raw time, one at a time", ratio))
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
