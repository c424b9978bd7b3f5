"""keel.AsyncClient against the raw AsyncAnthropic, 64 calls at a time, the emulator in a process of its own.

Both sides share one `anthropic.AsyncAnthropic` (and so one connection pool) on the loopback emulator
(`keel emulator serve`, limits reported, not enforced); keel wraps it as `keel.AsyncClient(sdk,
records=<tmp>/records.jsonl)` (no limiter). A block is `calls` standard calls started at once through an
`asyncio.Semaphore(64)`; the sides alternate block by block (ABBA) after a warm-up. The figure per side is its
median block in calls/s; the ratio is the median over the block pairs of keel's time over raw's.
Target: keel/raw at most 1.05x with 64 in flight. The same with one call at a time is printed for comparison
(`--sequential-blocks 0` skips it).

`--profile` runs keel's side once more under cProfile instead (`--profile-out FILE` keeps the stats).

Run: `.venv/bin/python bench/client_concurrency.py` (`--help` for the knobs, `--strict` to exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
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


def pair_ratios(timings: Timings) -> list[float]:
    """keel's time over raw's, block pair by block pair."""
    return [k.seconds / r.seconds for r, k in zip(timings["raw"], timings["keel"], strict=True)]


async def measure(emulator: EmulatorProcess, records: Path, args: argparse.Namespace) -> dict[int, Timings]:
    """Per concurrency (`--concurrency`, then 1), each side's blocks; each block's `probed` is the emulator's CPU."""
    async with anthropic.AsyncAnthropic(api_key=DEFAULT_API_KEY, base_url=emulator.base_url) as sdk:
        client = keel.AsyncClient(sdk, records=records)
        sides: dict[str, Callable[[], Awaitable[object]]] = {
            "raw": lambda: sdk.messages.create(**PARAMS),
            "keel": lambda: client.messages.create(**PARAMS),
        }
        probe = emulator.cpu_seconds
        found = {
            args.concurrency: await alternating.alternate_async(
                sides, args.blocks, args.calls, args.concurrency, args.warmup, probe
            )
        }
        if args.sequential_blocks:
            found[1] = await alternating.alternate_async(
                sides, args.sequential_blocks, args.sequential_calls, 1, args.warmup // 10, probe
            )
        await client.close()
    return found


def report(concurrency: int, timings: Timings) -> float:
    """Print one concurrency's figures; the median pair ratio."""
    blocks = timings["raw"]
    print(f"{concurrency} in flight: {len(blocks)} blocks of {blocks[0].calls:,} calls per side, alternating (ABBA)")
    print(f"{'side':<8}{'calls/s':>9}{'client CPU µs/call':>20}{'client busy':>13}{'emulator CPU µs/call':>22}"
          f"{'emulator busy':>15}")  # fmt: skip
    for side, drives in timings.items():
        best = statistics.median(d.per_second for d in drives)
        cpu = statistics.median(d.cpu_seconds / d.calls * 1e6 for d in drives)
        busy = statistics.median(d.cpu_seconds / d.seconds for d in drives)
        server = statistics.median(d.probed / d.calls * 1e6 for d in drives)
        server_busy = statistics.median(d.probed / d.seconds for d in drives)
        print(f"{side:<8}{best:>9,.0f}{cpu:>20,.0f}{busy:>13.0%}{server:>22,.0f}{server_busy:>15.0%}")
    pairs = pair_ratios(timings)
    ratio = statistics.median(pairs)
    print(f"keel/raw time: median of the pairs {ratio:.3f}; pairs " + " ".join(f"{r:.3f}" for r in pairs) + "\n")
    return ratio


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
        else:
            results.append(info("keel/raw time, one at a time", ratio))
    print_verdicts(results)
    return finish(args, results)


if __name__ == "__main__":
    sys.exit(main())
