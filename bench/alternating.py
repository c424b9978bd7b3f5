"""Side-by-side timing shared by the small A/B benchmarks: warm each side up, then alternate blocks of calls."""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable, Mapping

from load import Drive, drive


def add_arguments(parser: argparse.ArgumentParser, blocks: int, calls: int, warmup: int = 300) -> None:
    """The knobs of `alternate`, with these defaults."""
    parser.add_argument("--blocks", type=int, default=blocks, help=f"blocks per side (default {blocks})")
    parser.add_argument("--calls", type=int, default=calls, help=f"calls per block (default {calls})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"warm-up calls per side (default {warmup})")


def alternate(
    sides: Mapping[str, Callable[[], object]], blocks: int, calls: int, warmup: int = 300
) -> dict[str, list[float]]:
    """µs per call for each side, one figure per block; the sides take turns so load hits them alike."""
    for call in sides.values():
        for _ in range(warmup):
            call()
    timings: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(blocks):
        for name, call in sides.items():
            started = time.perf_counter()
            for _ in range(calls):
                call()
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
    return timings


async def alternate_async(
    sides: Mapping[str, Callable[[], Awaitable[object]]],
    blocks: int,
    calls: int,
    concurrency: int,
    warmup: int,
    probe: Callable[[], float] | None = None,
    after_warmup: Callable[[], object] | None = None,
) -> dict[str, list[Drive]]:
    """`alternate` for asyncio calls made `concurrency` at a time (`load.drive`): one `Drive` per block of `calls`
    calls for each side; the sides take turns in ABBA order (the first side leads even blocks, the last odd ones).
    With `probe` (say, a server's CPU seconds so far), each block's `probed` is its increase over the block;
    `after_warmup` is called once, between the warm-up and the first block.
    A failed call raises."""

    async def block(call: Callable[[], Awaitable[object]], count: int) -> Drive:
        before = probe() if probe is not None else 0.0
        done = await drive(lambda _: call(), count, concurrency)
        if done.failed:
            raise RuntimeError(f"{done.failed} of {count} calls failed: {done.failures_text()}")
        if probe is not None:
            done.probed = probe() - before
        return done

    for call in sides.values():
        await block(call, warmup)
    if after_warmup is not None:
        after_warmup()
    timings: dict[str, list[Drive]] = {name: [] for name in sides}
    names = list(sides)
    for number in range(blocks):
        for name in names if number % 2 == 0 else reversed(names):
            timings[name].append(await block(sides[name], calls))
    return timings
