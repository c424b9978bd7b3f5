"""Side-by-side timing shared by the small A/B benchmarks: warm each side up, then alternate blocks of calls."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping


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
